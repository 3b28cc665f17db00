//! `helios-profiles`: writes synthetic user profiles into Redis (the layout of `docs/PROFILES.md`)
//! and measures the profile replica against them.
//!
//! - `load`: fills Redis fast (pipelined `HSET`, several connections) with deterministic profiles
//!   whose segment popularity follows a Zipf law.
//! - `stream`: writes profile changes at a set rate, each `HSET`/`HINCRBY` followed by its `XADD`
//!   to the change stream in one `MULTI`.
//! - `measure`: starts a replica in this process and reports bootstrap time, memory per profile,
//!   lookup latency and replication lag under a stream of changes (JSON on stdout).
//!
//! A benchmarking tool: its own threads and connections only; never part of the appliance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bench::profiles::{ProfileShape, SplitMix64, Zipf, profile, user_id};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use profile_cache::{ReplicaConfig, keys};
use shards::ProfileView;
use tracing::info;

/// Synthetic profiles for Helios: load them into Redis, stream changes, measure the replica.
#[derive(Parser, Debug)]
#[command(name = "helios-profiles", version)]
struct Cli {
    /// Redis URL.
    #[arg(
        long,
        global = true,
        env = "HELIOS_REDIS_URL",
        default_value = "redis://127.0.0.1:6390/"
    )]
    url: String,
    /// Key namespace: profiles are `{ns}:profile:{id}`, the stream `{ns}:profile:changes`.
    #[arg(long, global = true, default_value = keys::DEFAULT_NAMESPACE)]
    namespace: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write `count` profiles (indices offset..offset+count), pipelined, without stream entries.
    Load(LoadArgs),
    /// Write profile changes at a fixed rate (HSET or HINCRBY, then XADD, in one MULTI).
    Stream(StreamArgs),
    /// Start a replica here and report bootstrap time, memory, lookup latency and lag (JSON).
    Measure(MeasureArgs),
}

#[derive(Args, Debug, Clone)]
struct Shape {
    /// Seed of the data set: the same seed and index always give the same id and profile.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Segments per profile.
    #[arg(long, default_value_t = 20)]
    segments: usize,
    /// Distinct segment ids; popularity of id k ∝ 1/k^s.
    #[arg(long, default_value_t = 10_000)]
    segment_space: usize,
    /// Zipf exponent s of segment popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Most frequency buckets per profile (0..=max, campaigns 1–100, last 24 hours).
    #[arg(long, default_value_t = 0)]
    freq_max: u32,
}

impl Shape {
    fn shape(&self) -> ProfileShape {
        ProfileShape {
            segments: self.segments,
            segment_space: self.segment_space,
            zipf_s: self.zipf_s,
            freq_max: self.freq_max,
        }
    }
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Number of profiles to write.
    #[arg(long)]
    count: u64,
    /// Index of the first profile (to extend a data set).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Commands per pipeline round trip.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 2)]
    connections: u64,
    #[command(flatten)]
    shape: Shape,
}

#[derive(Args, Debug, Clone)]
struct StreamArgs {
    /// Changes per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to stream, seconds (0 = until killed).
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Changes pick users uniformly among indices 0..users (those `load` wrote).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Share of changes that are billing-path counter increments (HINCRBY f:…); the rest rewrite
    /// the segments (HSET seg, ls).
    #[arg(long, default_value_t = 0.5)]
    freq_share: f64,
    /// `MAXLEN ~` bound of the change stream.
    #[arg(long, default_value_t = 1_000_000)]
    maxlen: u64,
    #[command(flatten)]
    shape: Shape,
}

#[derive(Args, Debug)]
struct MeasureArgs {
    /// Profiles expected in Redis (as loaded with `load --count`).
    #[arg(long)]
    count: u64,
    /// Timed lookups per pass.
    #[arg(long, default_value_t = 2_000_000)]
    lookups: u64,
    /// Users in the hot set of the "warm" pass (ids repeated from a small set that stays cached).
    #[arg(long, default_value_t = 10_000)]
    hot_set: u64,
    /// CPU to pin the lookup thread to (-1: do not pin).
    #[arg(long, default_value_t = 1)]
    cpu: i32,
    /// Changes per second written during the lag phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    stream_rate: u64,
    /// Length of the lag phase, seconds.
    #[arg(long, default_value_t = 30)]
    stream_s: u64,
    /// Longest wait for the bootstrap, seconds.
    #[arg(long, default_value_t = 600)]
    bootstrap_timeout_s: u64,
    /// The replica's on-disk snapshot: loaded at start if present (instead of a full copy),
    /// written at the end (so a second run measures a restart from it).
    #[arg(long)]
    snapshot: Option<std::path::PathBuf>,
    /// Run the replicator thread under SCHED_FIFO at this priority while it follows the stream
    /// (`ReplicaConfig::follow_fifo_priority`; needs root).
    #[arg(long)]
    fifo_priority: Option<u8>,
    #[command(flatten)]
    shape: Shape,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn connect(url: &str) -> Result<redis::Connection> {
    redis::Client::open(url)
        .context("Redis URL")?
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("connecting to {url}"))
}

fn load(cli: &Cli, a: &LoadArgs) -> Result<()> {
    if a.batch == 0 || a.connections == 0 {
        bail!("--batch and --connections must be ≥ 1");
    }
    let t0 = Instant::now();
    let shape = a.shape.shape();
    let zipf = Arc::new(Zipf::new(shape.segment_space, shape.zipf_s));
    let now = now_s();
    let threads: Vec<_> = (0..a.connections)
        .map(|t| {
            let (url, ns, zipf, shape) = (
                cli.url.clone(),
                cli.namespace.clone(),
                Arc::clone(&zipf),
                shape.clone(),
            );
            let (count, offset, batch, conns, seed) =
                (a.count, a.offset, a.batch, a.connections, a.shape.seed);
            std::thread::spawn(move || -> Result<u64> {
                let mut con = connect(&url)?;
                let mut written = 0u64;
                let mut start = t * batch;
                while start < count {
                    let end = (start + batch).min(count);
                    let mut p = redis::pipe();
                    for i in offset + start..offset + end {
                        let pr = profile(seed, i, &shape, &zipf, now);
                        let mut c = redis::cmd("HSET");
                        c.arg(keys::profile_key(&ns, &user_id(seed, i)))
                            .arg(keys::FIELD_SEGMENTS)
                            .arg(&pr.seg)
                            .arg(keys::FIELD_BIRTH_YEAR)
                            .arg(pr.yob)
                            .arg(keys::FIELD_GENDER)
                            .arg(pr.gender)
                            .arg(keys::FIELD_LAST_SEEN)
                            .arg(pr.last_seen);
                        for (f, n) in &pr.freq {
                            c.arg(f).arg(n);
                        }
                        p.add_command(c).ignore();
                    }
                    p.exec(&mut con).context("pipelined HSET")?;
                    written += end - start;
                    start += batch * conns;
                }
                Ok(written)
            })
        })
        .collect();
    let mut written = 0;
    for t in threads {
        written += t
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let s = t0.elapsed().as_secs_f64();
    let rate = written as f64 / s;
    info!(written, seconds = s, per_second = rate as u64, "load done");
    println!(
        "{}",
        serde_json::json!({"cmd": "load", "written": written, "seconds": s, "per_second": rate})
    );
    Ok(())
}

/// Writes changes at `a.rate` until `stop` or the duration ends; returns how many.
fn stream(url: &str, ns: &str, a: &StreamArgs, stop: &AtomicBool) -> Result<u64> {
    if a.users == 0 {
        bail!("--users must be ≥ 1");
    }
    let mut con = connect(url)?;
    let shape = a.shape.shape();
    let zipf = Zipf::new(shape.segment_space, shape.zipf_s);
    let stream_key = keys::changes_stream(ns);
    let mut g = SplitMix64::new(a.shape.seed ^ 0x57AE, now_s());
    let t0 = Instant::now();
    let end = (a.duration_s > 0).then(|| t0 + Duration::from_secs(a.duration_s));
    let mut sent = 0u64;
    let mut version = 0u64;
    while !stop.load(Ordering::Relaxed) && end.is_none_or(|e| Instant::now() < e) {
        let due = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
        // At most 100 ms worth per round trip, so a stall does not become one huge burst.
        let n = due.saturating_sub(sent).min((a.rate / 10).max(1));
        if n == 0 {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let mut p = redis::pipe();
        p.atomic();
        let now = now_s();
        for _ in 0..n {
            let i = g.below(a.users);
            let id = user_id(a.shape.seed, i);
            let key = keys::profile_key(ns, &id);
            if g.next_f64() < a.freq_share {
                let campaign = 1 + g.below(100) as u32;
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(keys::freq_field(campaign, now / 3600))
                    .arg(1);
            } else {
                version += 1;
                let pr = profile(a.shape.seed ^ version, i, &shape, &zipf, now);
                p.cmd("HSET")
                    .arg(&key)
                    .arg(keys::FIELD_SEGMENTS)
                    .arg(&pr.seg);
                p.arg(keys::FIELD_LAST_SEEN).arg(now);
            }
            p.ignore();
            p.cmd("XADD")
                .arg(&stream_key)
                .arg("MAXLEN")
                .arg("~")
                .arg(a.maxlen)
                .arg("*")
                .arg(keys::STREAM_FIELD)
                .arg(&id)
                .ignore();
        }
        p.exec(&mut con).context("MULTI HSET/HINCRBY + XADD")?;
        sent += n;
    }
    Ok(sent)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn pin_to(cpu: i32) {
    if cpu < 0 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it; the call only
    // reads the set for the current thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pct(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": h.value_at_quantile(0.50), "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999),
        "max": h.max(), "mean": (h.mean() * 10.0).round() / 10.0, "samples": h.len(),
    })
}

/// Length of every query id (`user_id` ids and the absent ones are all this long).
const ID_LEN: usize = 36;

/// Times `get` + one `segment_weight` per query, one at a time (TSC), after one warm-up pass.
/// Queries are laid out back to back in `queries` and read in order, as a request's id sits in a
/// hot receive buffer: the misses measured are the replica's, not the query list's.
fn time_lookups(reader: &profile_cache::Reader, queries: &str) -> Result<(Histogram<u64>, u64)> {
    let clock = quanta::Clock::new();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let mut found = 0u64;
    let n = queries.len() / ID_LEN;
    for pass in 0..2 {
        for k in 0..n {
            let id = &queries[k * ID_LEN..(k + 1) * ID_LEN];
            let t = clock.raw();
            let hit = reader.get(id).map(|p| p.segment_weight(1).is_some());
            let e = clock.raw();
            if pass == 1 {
                h.saturating_record(clock.delta_as_nanos(t, e).max(1));
                found += u64::from(hit.is_some());
            }
            std::hint::black_box(hit);
        }
    }
    Ok((h, found))
}

fn clock_overhead() -> Result<Histogram<u64>> {
    let clock = quanta::Clock::new();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    for _ in 0..1_000_000 {
        let t = clock.raw();
        let e = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t, e).max(1));
    }
    Ok(h)
}

fn measure(cli: &Cli, a: &MeasureArgs) -> Result<()> {
    if a.count == 0 {
        bail!("--count must be ≥ 1");
    }
    let rss0 = rss_bytes();
    let cfg = ReplicaConfig {
        redis_url: cli.url.clone(),
        namespace: cli.namespace.clone(),
        expected_profiles: a.count as usize,
        max_staleness: Duration::from_secs(5),
        snapshot_path: a.snapshot.clone(),
        snapshot_interval: Duration::from_secs(3600),
        follow_fifo_priority: a.fifo_priority,
        ..Default::default()
    };
    let t0 = Instant::now();
    let (replicator, reader) = profile_cache::start(&cfg).context("start the replica")?;
    let deadline = t0 + Duration::from_secs(a.bootstrap_timeout_s);
    while !reader.is_loaded() {
        if Instant::now() > deadline {
            bail!("replica not loaded after {} s", a.bootstrap_timeout_s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let loaded_s = t0.elapsed().as_secs_f64();
    while !reader.is_fresh() {
        if Instant::now() > deadline {
            bail!("replica not current after {} s", a.bootstrap_timeout_s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let fresh_s = t0.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    let st = replicator.stats();
    info!(profiles = st.profiles, loaded_s, "replica loaded");
    if st.profiles < a.count {
        bail!(
            "replica holds {} profiles, expected {} (run `load` first)",
            st.profiles,
            a.count
        );
    }
    let memory = serde_json::json!({
        "profiles": st.profiles,
        "rss_delta_bytes": rss1.saturating_sub(rss0),
        "rss_per_profile": rss1.saturating_sub(rss0) as f64 / st.profiles as f64,
        "record_bytes": st.record_bytes, "index_bytes": st.index_bytes,
        "payload_per_profile": (st.record_bytes + st.index_bytes) as f64 / st.profiles as f64,
    });

    // Lookups: ids over the whole data set (uniform: DRAM-bound) and a small hot set (cached).
    let lookups = a.lookups.max(1);
    let mut g = SplitMix64::new(a.shape.seed ^ 0x100C, 0);
    let hot = a.hot_set.clamp(1, a.count);
    let mut uniform = String::with_capacity(lookups as usize * ID_LEN);
    let mut hot_q = String::with_capacity(lookups as usize * ID_LEN);
    let mut misses = String::with_capacity(lookups as usize * ID_LEN);
    // The hot set: `hot` ids drawn once from the whole data set, then queried at random.
    let hot_ids: Vec<String> = (0..hot)
        .map(|_| user_id(a.shape.seed, g.below(a.count)))
        .collect();
    for k in 0..lookups {
        uniform.push_str(&user_id(a.shape.seed, g.below(a.count)));
        hot_q.push_str(&hot_ids[g.below(hot) as usize]);
        misses.push_str(&format!("absent-{:029}", k));
    }
    if uniform.len() != lookups as usize * ID_LEN || misses.len() != uniform.len() {
        bail!("query ids must all be {ID_LEN} bytes");
    }
    let (uni_h, hot_h, miss_h, over, found) = {
        let r = reader.clone();
        let cpu = a.cpu;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<_> {
                pin_to(cpu);
                let over = clock_overhead()?;
                let (uni, found) = time_lookups(&r, &uniform)?;
                let (hot, _) = time_lookups(&r, &hot_q)?;
                let (miss, _) = time_lookups(&r, &misses)?;
                Ok((uni, hot, miss, over, found))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("lookup thread panicked"))?
        })?
    };
    if found != lookups {
        bail!(
            "{} of {lookups} lookups of loaded ids missed",
            lookups - found
        );
    }

    // Replication lag under a stream of changes.
    let mut lag = serde_json::Value::Null;
    if a.stream_rate > 0 {
        let stop = AtomicBool::new(false);
        let sa = StreamArgs {
            rate: a.stream_rate,
            duration_s: a.stream_s + 2,
            users: a.count,
            freq_share: 0.5,
            maxlen: 1_000_000,
            shape: a.shape.clone(),
        };
        let before = replicator.stats();
        let mut fresh_samples = (0u64, 0u64);
        let mut lag_s_max = 0f64;
        let sent = std::thread::scope(|s| -> Result<u64> {
            let w = s.spawn(|| stream(&cli.url, &cli.namespace, &sa, &stop));
            std::thread::sleep(Duration::from_secs(2));
            replicator.reset_lag_histogram();
            let end = Instant::now() + Duration::from_secs(a.stream_s);
            while Instant::now() < end && !w.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                fresh_samples.0 += 1;
                fresh_samples.1 += u64::from(reader.is_fresh());
                lag_s_max = lag_s_max.max(reader.lag_seconds());
            }
            stop.store(true, Ordering::Relaxed);
            w.join()
                .map_err(|_| anyhow::anyhow!("stream thread panicked"))?
        })?;
        std::thread::sleep(Duration::from_millis(500));
        let h = replicator.lag_histogram();
        let after = replicator.stats();
        lag = serde_json::json!({
            "rate_per_s": a.stream_rate, "seconds": a.stream_s, "changes_sent": sent,
            "entries_applied": after.stream_entries - before.stream_entries,
            "apply_lag_ms": pct(&h),
            "lag_seconds_max_sampled": lag_s_max,
            "fresh_share": fresh_samples.1 as f64 / fresh_samples.0.max(1) as f64,
            "bootstraps": after.bootstraps,
        });
    }
    let st = replicator.stats();
    let t_stop = Instant::now();
    replicator.stop();
    let stop_s = t_stop.elapsed().as_secs_f64();
    let st_end = reader.stats();
    let out = serde_json::json!({
        "snapshot": {"path": a.snapshot, "written_at_stop": st_end.snapshots_written,
                     "write_ms": st_end.last_snapshot_ms, "stop_seconds": stop_s,
                     "errors": st_end.snapshot_errors},
        "cmd": "measure",
        "bootstrap": {"profiles": st.profiles, "seconds_to_loaded": loaded_s,
                      "seconds_to_fresh": fresh_s, "scan_copy_ms": st.last_bootstrap_ms,
                      "bootstraps": st.bootstraps,
                      "snapshot_loaded_profiles": st.snapshot_loaded_profiles},
        "memory": memory,
        "lookup_ns": {
            "clock_overhead": pct(&over),
            "uniform_over_all_profiles": pct(&uni_h),
            "hot_set": pct(&hot_h), "hot_set_size": hot,
            "misses": pct(&miss_h),
        },
        "replication": lag,
        "counters": format!("{st:?}"),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Load(a) => load(&cli, a),
        Cmd::Stream(a) => {
            let t0 = Instant::now();
            let stop = AtomicBool::new(false);
            let sent = stream(&cli.url, &cli.namespace, a, &stop)?;
            let s = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"cmd": "stream", "sent": sent, "seconds": s,
                                   "per_second": sent as f64 / s})
            );
            Ok(())
        }
        Cmd::Measure(a) => measure(&cli, a),
    }
}

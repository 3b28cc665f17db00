//! `helios-owntime`: the appliance's own processing time per request, measured in-process —
//! request bytes in → response bytes out through the same sans-IO [`Core`] the drivers carry
//! (HTTP parse, decode, validate, privacy, decide, encode, three signed notice URLs, the event)
//! — over a corpus, with no socket and no kernel; plus the allocations per request and the
//! p99 of one `Shard::decide` over a synthetic 1,000-campaign set.
//!
//! How: each corpus body is rendered as an HTTP/1.1 request once; then, per request, its bytes
//! are appended to a connection's input ([`Conn::push`], the copy a driver makes), and
//! `Core::begin_turn` + `Core::on_input` are timed alone with the TSC clock (`quanta`), the
//! answer cleared after the timer stops. `--warmup-rounds` passes over the corpus come first
//! (not measured). Allocations are counted by the appliance's per-thread counting allocator over
//! the measured rounds. Under `valgrind --tool=callgrind`, `--rounds N` vs `--rounds M` gives the
//! instructions of (M − N) corpus passes (scripts/bench.sh does that).
//!
//! Single-threaded, pinned with `--cpu`. Writes one JSON object (`--json`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use appliance::config::Config;
use appliance::core::Core;
use appliance::events::CountingSink;
use appliance::metrics::Published;
use appliance::server::{NoticeSetup, core_config};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use shards::CompiledSet;

#[global_allocator]
static ALLOC: appliance::alloc_count::CountingAlloc = appliance::alloc_count::CountingAlloc;

/// In-process timing of the appliance's core over a corpus (no sockets), allocations per
/// request, and the decision's p99 over 1,000 synthetic campaigns.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Corpus (JSON lines, one bid request body per line, as written by helios-corpus).
    #[arg(long)]
    corpus: PathBuf,
    /// Campaigns file (JSON, docs/CAMPAIGNS.md).
    #[arg(long)]
    campaigns: PathBuf,
    /// Use at most this many corpus requests (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Passes over the corpus before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_rounds: usize,
    /// Measured passes over the corpus.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Campaigns in the synthetic set of the decision timing (0 = skip it).
    #[arg(long, default_value_t = 1000)]
    decision_campaigns: usize,
    /// Write the results as one JSON object here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// After the warm-up, print (to stderr) the first N corpus requests that still allocate,
    /// with their allocation count (to find what allocates on the warm path).
    #[arg(long, default_value_t = 0)]
    show_allocating: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(cpu) = cli.cpu {
        bench::sys::pin_to_cpu(cpu)?;
    }
    let bodies = bench::corpus::read_file(&cli.corpus, cli.limit)?;
    let set = {
        let b = std::fs::read(&cli.campaigns)
            .with_context(|| format!("reading {}", cli.campaigns.display()))?;
        CompiledSet::parse(&b).with_context(|| format!("campaigns {}", cli.campaigns.display()))?
    };
    let cfg = Config::default();
    let notice = NoticeSetup {
        key: b"bench-notice-key".to_vec(),
        base: "http://127.0.0.1:8080".into(),
    };
    let mut core = Core::new(
        core_config(&cfg, 0, "owntime", &notice),
        set,
        Box::new(CountingSink::default()),
        quanta::Clock::new(),
        Arc::new(Published::new(0)),
        None,
    );
    let reqs: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| {
            bench::http::render_request(
                "POST",
                "bench",
                "/openrtb2/bid",
                Some("application/json"),
                b,
            )
        })
        .collect();
    let mut conn = core.new_conn();
    let clock = quanta::Clock::new();
    let one = |core: &mut Core, conn: &mut appliance::core::Conn, r: &[u8]| -> u64 {
        let ok = conn.push(r);
        debug_assert!(ok, "a corpus request fits the input bound");
        let t0 = clock.raw();
        core.begin_turn();
        core.on_input(conn);
        let t1 = clock.raw();
        let ns = clock.delta_as_nanos(t0, t1);
        conn.out.clear();
        ns
    };
    for _ in 0..cli.warmup_rounds {
        for r in &reqs {
            one(&mut core, &mut conn, r);
        }
    }
    if cli.show_allocating > 0 {
        let mut shown = 0;
        let mut allocating = 0usize;
        for (i, r) in reqs.iter().enumerate() {
            let a = appliance::alloc_count::thread_allocs();
            one(&mut core, &mut conn, r);
            let n = appliance::alloc_count::thread_allocs() - a;
            if n > 0 {
                allocating += 1;
                if shown < cli.show_allocating {
                    shown += 1;
                    let body: String = String::from_utf8_lossy(&bodies[i])
                        .chars()
                        .take(600)
                        .collect();
                    eprintln!("request {i} allocated {n} times: {body}");
                }
            }
        }
        eprintln!(
            "{allocating} of {} warm corpus requests allocated",
            reqs.len()
        );
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")?;
    let a0 = appliance::alloc_count::thread_allocs();
    let b0 = core.metrics().bids;
    let n0 = core.metrics().bid_requests;
    for _ in 0..cli.rounds {
        for r in &reqs {
            hist.saturating_record(one(&mut core, &mut conn, r).max(1));
        }
    }
    let allocs = appliance::alloc_count::thread_allocs() - a0;
    let measured = (reqs.len() * cli.rounds) as u64;
    let handled = core.metrics().bid_requests - n0;
    anyhow::ensure!(
        handled == measured,
        "the core handled {handled} of {measured} requests (a corpus request did not parse?)"
    );
    let bids = core.metrics().bids - b0;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let own = json!({
        "requests": measured,
        "corpus_requests": reqs.len(),
        "rounds": cli.rounds,
        "bid_share": bids as f64 / measured as f64,
        "p50_us": us(0.50),
        "p90_us": us(0.90),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": hist.max() as f64 / 1000.0,
        "mean_us": hist.mean() / 1000.0,
        "allocations": allocs,
        "allocs_per_request": allocs as f64 / measured as f64,
    });
    eprintln!(
        "own time (core, bytes in → bytes out), {measured} requests, {:.0}% bids: \
         p50 {:.2} µs  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.1}; allocations {allocs} ({:.4}/request)",
        100.0 * bids as f64 / measured as f64,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0,
        allocs as f64 / measured as f64
    );
    let decision = if cli.decision_campaigns > 0 {
        decision_latency(cli.decision_campaigns, cli.rounds.max(1))?
    } else {
        serde_json::Value::Null
    };
    let out = json!({ "own_time": own, "decision": decision });
    if let Some(p) = &cli.json {
        std::fs::write(p, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// p50/p99/p99.9 of one `Shard::decide` (each timed alone) over `n` synthetic campaigns and
/// 4,096 synthetic requests, budgets enforced with leases granted ([`bench::decide`], the harness
/// of the `decide_latency` bench, here on the TSC clock).
fn decision_latency(n: usize, rounds: usize) -> Result<serde_json::Value> {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")?;
    let mut bids = 0usize;
    bench::decide::time_decisions(n, rounds, &quanta::Clock::new(), |ns, b| {
        hist.saturating_record(ns.max(1));
        bids += b;
    })?;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "decision, {n} campaigns, {} decisions: p50 {:.2} µs  p99 {:.2}  p99.9 {:.2}",
        hist.len(),
        us(0.5),
        us(0.99),
        us(0.999)
    );
    Ok(json!({
        "campaigns": n,
        "decisions": hist.len(),
        "imp_bids_per_decision": bids as f64 / hist.len() as f64,
        "p50_us": us(0.50),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
    }))
}

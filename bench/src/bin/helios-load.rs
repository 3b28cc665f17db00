//! `helios-load`: the open-loop / closed-loop HTTP load generator.
//!
//! One pinned thread drives every connection (see `bench::load`). Must never: measure latency
//! from the actual send time in open-loop mode (coordinated omission).

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bench::corpus::{self, CorpusConfig};
use bench::load::{self, LoadConfig, LoadReport, Mode, Requests};
use clap::Parser;

/// Load generator for HTTP/1.1 bid endpoints: N keep-alive connections driven by one thread
/// (epoll, no pipelining), optionally pinned to one CPU.
///
/// Open loop (`--rate`): request i is due at start + i/rate; latency is measured from that
/// intended time, so a server stall is charged to every request that was due during it
/// (coordinated-omission correct). Closed loop (`--closed`): every connection sends again as soon
/// as it is answered — max throughput; note that on a small machine the generator's own core may
/// saturate first (its CPU per request is printed beside the throughput).
///
/// The first `--warmup` seconds are not measured; then `--duration` seconds (or `--requests`
/// requests, whichever ends first) are. Prints throughput, latency p50/p90/p99/p99.9/max in µs,
/// status counts and errors by kind; `--json` writes the same as one JSON object.
#[derive(Debug, Parser)]
#[command(name = "helios-load", version)]
struct Args {
    /// Target URL (plain http, host must resolve; the path is what is POSTed to).
    #[arg(long, default_value = "http://127.0.0.1:8080/openrtb2/bid")]
    url: String,
    /// Corpus file (JSON lines, one request body per line, as written by helios-corpus). Without
    /// it, `--corpus-count` requests are generated in memory with `--seed` and `--users`.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Requests generated in memory when no `--corpus` file is given.
    #[arg(long, default_value_t = 10_000)]
    corpus_count: u64,
    /// Seed of the in-memory corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// User-id space (`u0`…) of the in-memory corpus.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Open loop: offered requests per second.
    #[arg(long, conflicts_with = "closed")]
    rate: Option<u64>,
    /// Closed loop: each connection sends as soon as it is answered (max throughput).
    #[arg(long)]
    closed: bool,
    /// Keep-alive connections (one outstanding request each).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Seconds at the start that are not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured after the warm-up.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured requests (even if `--duration` is not over).
    #[arg(long)]
    requests: Option<u64>,
    /// Milliseconds before an unanswered request counts as a timeout (its connection is replaced).
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Due requests that may wait for an idle connection (open loop); past it they are dropped
    /// and counted as `backlog_overflow`.
    #[arg(long, default_value_t = 1_000_000)]
    max_backlog: usize,
    /// Reconnects allowed over the run (after errors or server-side closes).
    #[arg(long, default_value_t = 10_000)]
    max_reconnects: u64,
    /// Pin the generator's thread to this CPU (sched_setaffinity).
    #[arg(long)]
    cpu: Option<usize>,
    /// PID of the server: its CPU time (utime+stime from /proc) over the measured window is
    /// reported per request.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the report as JSON to this file (`-` for stdout, then the text summary goes to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Label copied into the JSON report (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mode = match (a.rate, a.closed) {
        (Some(0), _) => bail!("--rate must be at least 1"),
        (Some(rate), _) => Mode::Open { rate },
        (None, true) => Mode::Closed,
        (None, false) => bail!("choose --rate N (open loop) or --closed (max throughput)"),
    };
    let url = bench::http::parse_url(&a.url).context("--url must be http://host:port/path")?;
    let addr = url
        .authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", url.authority))?
        .next()
        .context("--url host resolves to nothing")?;
    let bodies = load_bodies(&a)?;
    let reqs = Requests::post_json(
        &url.host_header,
        &url.target,
        bodies.iter().map(Vec::as_slice),
    );
    drop(bodies);
    if let Some(cpu) = a.cpu {
        bench::sys::pin_to_cpu(cpu)?;
    }
    let secs = |s: f64, name: &str| {
        anyhow::ensure!(s.is_finite() && s >= 0.0, "{name} must be >= 0");
        Ok(Duration::from_secs_f64(s))
    };
    let cfg = LoadConfig {
        addr,
        connections: a.connections,
        mode,
        warmup: secs(a.warmup, "--warmup")?,
        duration: secs(a.duration, "--duration")?,
        max_requests: a.requests,
        timeout: Duration::from_millis(a.timeout_ms),
        max_backlog: a.max_backlog,
        max_reconnects: a.max_reconnects,
        server_pid: a.server_pid,
    };
    let report = load::run(&cfg, &reqs)?;
    let to_stdout = a.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let text = summary(&a.label, &report);
    if to_stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(path) = &a.json {
        let mut v = serde_json::to_value(&report)?;
        v["label"] = a.label.clone().into();
        v["url"] = a.url.clone().into();
        v["cpu"] = a.cpu.into();
        let s = serde_json::to_string_pretty(&v)?;
        if to_stdout {
            println!("{s}");
        } else {
            std::fs::write(path, s + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn load_bodies(a: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(path) = &a.corpus else {
        let cfg = CorpusConfig {
            seed: a.seed,
            users: a.users,
            ..CorpusConfig::default()
        };
        return Ok((0..a.corpus_count.max(1))
            .map(|i| corpus::request(&cfg, i).into_bytes())
            .collect());
    };
    corpus::read_file(path, 0)
}

fn summary(label: &str, r: &LoadReport) -> String {
    let l = &r.latency;
    let mode = match r.mode {
        Mode::Open { rate } => format!("open loop at {rate} req/s"),
        Mode::Closed => "closed loop".to_owned(),
    };
    let mut s = format!(
        "{label}{}{mode}, {} connections, {:.2} s measured\n  \
         throughput {:.0} req/s ({} completed, {} sent, {} in warm-up)\n  \
         latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n  \
         generator CPU {:.2} µs/req ({:.0}% of a core{}), {}\n",
        if label.is_empty() { "" } else { ": " },
        r.connections,
        r.window_s,
        r.achieved_rps,
        r.completed,
        r.sent,
        r.warmup_completed,
        l.p50_us,
        l.p90_us,
        l.p99_us,
        l.p999_us,
        l.max_us,
        r.generator_cpu_us_per_req,
        r.generator_cpu_util * 100.0,
        match r.generator_wait_util {
            Some(w) => format!(", waited runnable {:.1}% of the window", w * 100.0),
            None => String::new(),
        },
        r.generator_policy
    );
    if let (Some(us), Some(u)) = (r.server_cpu_us_per_req, r.server_cpu_util) {
        s += &format!(
            "  server CPU {us:.2} µs/req ({:.0}% of a core)\n",
            u * 100.0
        );
    }
    if !r.server_threads_cpu_us_per_req.is_empty() {
        s += "  server CPU by thread, µs/req:";
        for (name, us) in &r.server_threads_cpu_us_per_req {
            s += &format!("  {name} {us:.2}");
        }
        s += "\n";
    }
    // The share of a CPU each server thread got, and of the window it waited runnable (starved).
    let wait_of = |name: &str| r.server_threads_wait_util.get(name).copied().unwrap_or(0.0);
    let busy: Vec<_> = r
        .server_threads_cpu_util
        .iter()
        .filter(|(name, u)| **u >= 0.01 || wait_of(name) >= 0.01)
        .collect();
    if !busy.is_empty() {
        s += "  server threads, % of a core run / waited runnable:";
        for (name, u) in busy {
            s += &format!("  {name} {:.0}/{:.1}", u * 100.0, wait_of(name) * 100.0);
        }
        s += "\n";
    }
    if r.latency_200.count > 0 {
        let l = &r.latency_200;
        s += &format!(
            "  latency of 200 answers µs  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
            l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    s += &format!("  statuses {:?}\n  errors {:?}\n", r.statuses, r.errors);
    s
}

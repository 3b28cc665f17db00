//! `helios-corpus`: writes the deterministic OpenRTB 2.6 request corpus as JSON lines.
//!
//! Single-threaded; holds one request at a time. Must never: depend on the clock (the corpus is a
//! pure function of the options).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use bench::corpus::{self, CorpusConfig, UserIds};
use clap::Parser;

/// Generate realistic OpenRTB 2.6 bid requests (site and app; banner, video and native; 1–5 imps;
/// deals; GDPR/TCF, GPP and US-privacy signals; bodies of 0.5–8 KB, log-uniform), one compact JSON
/// object per line. The output is a pure function of the options: the same seed gives the same
/// bytes on every machine.
///
/// User ids: `user.id` and `user.buyeruid` both carry the id of index `n`, `n` in `0..users`
/// drawn Zipf-like (index 0 is the most frequent). With `--user-ids plain` the id is `u{n}`; with
/// `--user-ids profiles` it is the UUID-shaped id `helios-profiles load --seed <profiles-seed>`
/// writes for profile `n`, so pass `--users` ≤ that tool's `--count` and every id has a profile.
#[derive(Debug, Parser)]
#[command(name = "helios-corpus", version)]
struct Args {
    /// Number of requests to write.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    count: u64,
    /// Seed; the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Size of the user-id space: ids are `u0` … `u{users-1}`.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Spelling of user ids: `plain` (`u{n}`) or `profiles` (the ids helios-profiles writes).
    #[arg(long, value_enum, default_value_t = IdFormat::Plain)]
    user_ids: IdFormat,
    /// Seed of the helios-profiles data set (with `--user-ids profiles`).
    #[arg(long, default_value_t = 1)]
    profiles_seed: u64,
    /// Zipf exponent of the user-id draw (0 = uniform; 1 = classic Zipf).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of requests from a site; the rest come from an app.
    #[arg(long, default_value_t = 0.6)]
    site_share: f64,
    /// Share of requests without any user object (no id at all).
    #[arg(long, default_value_t = 0.05)]
    anonymous_share: f64,
    /// Share of requests under GDPR (`regs.gdpr=1` plus a TCF-shaped `user.consent`).
    #[arg(long, default_value_t = 0.3)]
    gdpr_share: f64,
    /// Share of requests carrying a GPP string (`regs.gpp`, `regs.gpp_sid`).
    #[arg(long, default_value_t = 0.2)]
    gpp_share: f64,
    /// Share of imps in a private marketplace (`imp.pmp` with 1–3 deals).
    #[arg(long, default_value_t = 0.2)]
    deal_share: f64,
    /// Most imps in one request (1–5; each request draws 1..=this uniformly).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=5))]
    max_imps: u32,
    /// Output file; `-` streams to stdout.
    #[arg(long, short = 'o', default_value = "-")]
    out: PathBuf,
    /// Print a size summary (min, p50, p90, max bytes) to stderr when done.
    #[arg(long)]
    stats: bool,
}

/// How user ids are spelled (see the description above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdFormat {
    Plain,
    Profiles,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for (name, v) in [
        ("--site-share", a.site_share),
        ("--anonymous-share", a.anonymous_share),
        ("--gdpr-share", a.gdpr_share),
        ("--gpp-share", a.gpp_share),
        ("--deal-share", a.deal_share),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&v),
            "{name} must be in [0, 1], got {v}"
        );
    }
    anyhow::ensure!(a.users >= 1, "--users must be at least 1");
    let cfg = CorpusConfig {
        seed: a.seed,
        users: a.users,
        user_ids: match a.user_ids {
            IdFormat::Plain => UserIds::Plain,
            IdFormat::Profiles => UserIds::Profiles {
                seed: a.profiles_seed,
            },
        },
        zipf_s: a.zipf,
        site_share: a.site_share,
        anonymous_share: a.anonymous_share,
        gdpr_share: a.gdpr_share,
        gpp_share: a.gpp_share,
        deal_share: a.deal_share,
        max_imps: a.max_imps,
    };
    let sink: Box<dyn Write> = if a.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?)
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let mut sizes = Vec::new();
    for i in 0..a.count {
        let line = corpus::request(&cfg, i);
        if a.stats {
            sizes.push(line.len());
        }
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush().context("writing the corpus")?;
    if a.stats && !sizes.is_empty() {
        sizes.sort_unstable();
        let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{} requests: min {} B, p50 {} B, p90 {} B, max {} B",
            sizes.len(),
            sizes[0],
            at(0.5),
            at(0.9),
            at(1.0)
        );
    }
    Ok(())
}

//! `helios`: the bidder binary. Reads the configuration (file, `HELIOS_*` environment, flags),
//! loads the campaigns, then runs one pinned event loop per core until SIGTERM/SIGINT.
//! Exit codes: 0 after a graceful shutdown, 2 for a bad configuration (the message names the
//! key), 1 for a start-up or run-time failure, 130 on a second signal.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use appliance::config::{Config, Driver, FlagOverrides, parse_cpu_list};
use clap::Parser;

#[global_allocator]
static ALLOC: appliance::alloc_count::CountingAlloc = appliance::alloc_count::CountingAlloc;

/// Helios: a real-time bidder (OpenRTB 2.6) with one pinned event loop per core.
///
/// Every setting lives in one TOML file (see --print-config for all of them with their
/// values). Each can be overridden by an environment variable HELIOS_<SECTION>_<KEY>, e.g.
/// HELIOS_HTTP_MAX_BODY_BYTES=131072 or HELIOS_SERVER_DRIVER=epoll, and the common ones by the
/// flags below. Precedence: defaults < file < environment < flags.
///
/// Bid port: POST /openrtb2/bid and /openrtb2/bid/{exchange} (200 bid, 204 no bid, 400 invalid);
/// GET|POST /notice/win|billing|loss. Admin port: /metrics, /healthz, /readyz, /debug/config.
/// SIGTERM or SIGINT drains and exits 0; a second signal exits at once.
///
/// Redis URLs (profiles.redis_url, bidding.campaigns_redis_url, events.frequency_redis_url) are
/// redis://… (plain text) or rediss://… (TLS: the server's certificate chain and hostname are
/// verified against tls.redis_ca_file, HELIOS_TLS_REDIS_CA_FILE, or else the system's trust
/// store; a server that fails verification is never talked to).
///
/// Campaign budgets are enforced by default ([budget] enforce): leases from the Redis in
/// budget.redis_url or bidding.campaigns_redis_url, else held in this process from the
/// campaigns file (per node). Billing notices spend, loss notices release (docs/CAMPAIGNS.md).
#[derive(Debug, Parser)]
#[command(name = "helios", version)]
struct Cli {
    /// TOML configuration file. Without it the defaults apply (then environment and flags).
    #[arg(short, long, value_name = "FILE")]
    config: Option<String>,
    /// Bid port address [server.listen; default 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Admin port address, keep it on loopback [admin.listen; default 127.0.0.1:9100].
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<String>,
    /// CPUs to run event loops on, one pinned thread each: "all" (every CPU this process may
    /// use) or a list like "0-1" or "0,2-3" [server.cores; default all].
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Event loop: uring (io_uring; falls back to epoll, logged, when the ring cannot be set
    /// up) or epoll (a tokio current_thread runtime per core) [server.driver; default uring].
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// Campaigns file (JSON, see docs/CAMPAIGNS.md) [bidding.campaigns; default none].
    #[arg(long, value_name = "FILE")]
    campaigns: Option<String>,
    /// Answer every bid request 204 without decoding or bidding, over the same HTTP stack
    /// (the ceiling the full path is compared with) [server.null].
    #[arg(long)]
    null: bool,
    /// Node name in events and logs [server.node; default the host name].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Log filter, e.g. info, debug, "appliance=debug,warn" [log.level; default info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Print the effective configuration (TOML, secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

fn flag_overrides(cli: &Cli) -> FlagOverrides {
    let mut f: FlagOverrides = Vec::new();
    let mut add = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            f.push((k, v.clone()));
        }
    };
    add("server.listen", &cli.listen);
    add("admin.listen", &cli.admin);
    add("server.cores", &cli.cores);
    add("bidding.campaigns", &cli.campaigns);
    add("server.node", &cli.node);
    add("log.level", &cli.log_level);
    if let Some(d) = cli.driver {
        f.push(("server.driver", d.as_str().to_owned()));
    }
    if cli.null {
        f.push(("server.null", "true".to_owned()));
    }
    f
}

fn bad_config(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("helios: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // One crypto provider for the TLS of rediss:// connections (ring, the workspace's only one);
    // an error means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let cfg = match Config::load(
        cli.config.as_deref(),
        |k| std::env::var(k).ok(),
        &flag_overrides(&cli),
    ) {
        Ok(c) => c,
        Err(e) => return bad_config(e),
    };
    if cli.print_config {
        print!("{}", cfg.redacted().to_toml());
        return ExitCode::SUCCESS;
    }
    let allowed = match appliance::sys::allowed_cpus() {
        Ok(a) => a,
        Err(e) => return bad_config(format!("cannot read the CPU affinity: {e}")),
    };
    let asked = match parse_cpu_list(&cfg.server.cores) {
        Ok(c) => c,
        Err(e) => return bad_config(format!("config key server.cores: {e}")),
    };
    let cpus = if asked.is_empty() {
        allowed.clone()
    } else {
        asked
    };
    if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
        return bad_config(format!(
            "config key server.cores: CPU {c} is not one this process may use (allowed: {allowed:?})"
        ));
    }
    let campaigns = if cfg.bidding.campaigns.is_empty() {
        shards::CompiledSet::empty()
    } else {
        let loaded = std::fs::read(&cfg.bidding.campaigns)
            .map_err(anyhow::Error::from)
            .and_then(|b| shards::CompiledSet::parse(&b).map_err(anyhow::Error::from));
        match loaded {
            Ok(s) => s,
            Err(e) => {
                return bad_config(format!(
                    "config key bidding.campaigns: {}: {e}",
                    cfg.bidding.campaigns
                ));
            }
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.log.level))
        .with_writer(std::io::stderr)
        .with_thread_names(true)
        .init();
    match appliance::server::run(cfg, cpus, Arc::clone(&campaigns)).context("helios") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "exiting");
            ExitCode::from(1)
        }
    }
}

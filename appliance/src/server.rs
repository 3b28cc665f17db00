//! Start-up and shutdown of the process: CPUs, listeners, one pinned thread per core, the
//! admin thread, signals.
//!
//! Runs on the main thread. Each core thread gets its own `SO_REUSEPORT` listener, pins itself,
//! builds its [`Core`] and runs its driver (io_uring, falling back to epoll when the ring cannot
//! be set up). The main thread then waits for SIGTERM/SIGINT: the first one asks every core to
//! drain (stop accepting, finish in-flight requests, close), the second exits at once.
//! [`Shared`] holds the little that is shared: flags read once per loop tick (never per
//! request) and the cores' published metrics. Must never: hand a core anything another core
//! writes on the request path.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use quanta::Clock;
use shards::CompiledSet;

use crate::config::{Config, Driver};
use crate::core::{Core, CoreConfig};
use crate::driver::{self, LoopConfig};
use crate::events::{CountingSink, EventSink};
use crate::http::Limits;
use crate::metrics::Published;
use crate::sys;

/// What the main, admin and core threads share. Written rarely (start, stop), read per tick.
#[derive(Debug)]
pub struct Shared {
    pub shutdown: Arc<AtomicBool>,
    pub campaigns_loaded: AtomicBool,
    pub cores_running: AtomicUsize,
    pub n_cores: usize,
    pub published: Vec<Arc<Published>>,
    pub config_toml: String,
    /// (core, driver description), for `helios_core_info`.
    pub drivers: Mutex<Vec<(usize, String)>>,
    /// The event pipeline (node-level metrics; taken by the main thread at shutdown).
    pub pipeline: Mutex<Option<pipeline::Pipeline>>,
    /// A reader of the profile replica for `/readyz` (None without a profile cache).
    pub profiles: Mutex<Option<profile_cache::Reader>>,
    /// Live campaign sets from Redis (None without `bidding.campaigns_redis_url`).
    pub live: Option<crate::campaign_feed::LiveStatus>,
    /// Budget enforcement (None when `budget.enforce` is off).
    pub budget: Option<crate::budget::BudgetStatus>,
}

/// One core's configuration from the node's (also used by the glommio reference driver in
/// `bench/`, so both carry the same core with the same settings).
pub fn core_config(cfg: &Config, core_id: u16, node: &str, notice: &NoticeSetup) -> CoreConfig {
    CoreConfig {
        core_id,
        node: node.to_owned(),
        limits: Limits {
            max_header: cfg.http.max_header_bytes,
            max_body: cfg.http.max_body_bytes,
        },
        max_inflated_body: cfg.http.max_inflated_body_bytes,
        null_mode: cfg.server.null,
        default_tmax_ms: cfg.bidding.default_tmax_ms,
        margin_ms: cfg.bidding.network_margin_ms,
        shed_queue_pct: cfg.bidding.shed_queue_pct,
        shed_interval: Duration::from_millis(cfg.bidding.shed_interval_ms),
        queue_target: Duration::from_micros(cfg.bidding.queue_target_us),
        turn_budget: Duration::from_micros(cfg.bidding.turn_budget_us),
        out_high_water: cfg.http.out_high_water_bytes,
        seat: cfg.bidding.seat.clone(),
        vendor_id: cfg.bidding.vendor_id,
        conn_in_capacity: cfg.http.conn_buffer_bytes,
        conn_out_capacity: cfg.http.conn_buffer_bytes,
        notice_key: notice.key.clone(),
        notice_base: notice.base.clone(),
        notice_late_window: Duration::from_secs(cfg.notices.late_window_s),
        trace_exchanges: crate::trace::parse_allowed(&cfg.bidding.trace_exchanges),
    }
}

/// The notice key and base URL every core signs with.
#[derive(Debug, Clone)]
pub struct NoticeSetup {
    pub key: Vec<u8>,
    pub base: String,
}

fn notice_setup(cfg: &Config, bound: SocketAddr, node: &str) -> Result<NoticeSetup> {
    let key = if cfg.notices.key.is_empty() {
        let mut k = vec![0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
            &mut k,
        )
        .context("reading /dev/urandom")?;
        tracing::warn!(
            "notices.key is not set: signing notices with a random per-process key \
             (notices for bids of an earlier process will be rejected)"
        );
        k
    } else {
        cfg.notices.key.as_bytes().to_vec()
    };
    let base = if cfg.notices.base_url.is_empty() {
        let host = if bound.ip().is_unspecified() {
            node.to_owned()
        } else {
            bound.ip().to_string()
        };
        format!("http://{host}:{}", bound.port())
    } else {
        cfg.notices.base_url.clone()
    };
    Ok(NoticeSetup { key, base })
}

fn pipeline_config(
    cfg: &Config,
    node: &str,
    redis_ca: Option<&Vec<u8>>,
) -> pipeline::PipelineConfig {
    let e = &cfg.events;
    pipeline::PipelineConfig {
        brokers: e.brokers.clone(),
        node: node.to_owned(),
        queue_capacity_per_core: e.queue_capacity_per_core,
        spool_dir: e.spool_dir.clone().into(),
        spool_max_bytes: e.spool_max_bytes,
        startup_timeout_ms: e.startup_timeout_ms,
        redis_url: (!e.frequency_redis_url.is_empty()).then(|| e.frequency_redis_url.clone()),
        redis_ca_pem: redis_ca.cloned(),
        frame_max_bytes: e.frame_max_bytes,
        frame_linger_ms: e.frame_linger_ms,
        journal_bytes_per_core: e.journal_bytes_per_core,
        idle_sleep_max_us: e.idle_sleep_max_us,
        producer: pipeline::ProducerConfig {
            // Checked by Config::check.
            extra: crate::config::librdkafka_settings(&e.librdkafka).unwrap_or_default(),
            ..pipeline::ProducerConfig::default()
        },
        ..pipeline::PipelineConfig::default()
    }
}

fn loop_config(cfg: &Config) -> LoopConfig {
    let ms = Duration::from_millis;
    LoopConfig {
        idle: ms(cfg.http.idle_timeout_ms),
        slow: ms(cfg.http.slow_client_timeout_ms),
        linger: ms(cfg.http.linger_ms),
        publish: ms(cfg.admin.publish_ms),
        drain: ms(cfg.server.drain_timeout_ms),
        tick: ms(cfg.uring.tick_ms),
        max_conns: cfg.server.max_connections_per_core as usize,
        ring_entries: cfg.uring.ring_entries,
        buffers: cfg.uring.buffers as u16,
        buffer_bytes: cfg.uring.buffer_bytes,
        rx_timestamps: cfg.bidding.rx_timestamps,
    }
}

/// Runs the appliance until a signal; returns when every core has drained.
pub fn run(mut cfg: Config, cpus: Vec<usize>, campaigns: Arc<CompiledSet>) -> Result<()> {
    let node = if cfg.server.node.is_empty() {
        sys::hostname()
    } else {
        cfg.server.node.clone()
    };
    let addr: SocketAddr = cfg.server.listen.parse().context("server.listen")?;
    let admin_addr: SocketAddr = cfg.admin.listen.parse().context("admin.listen")?;
    // One listener per core on the same address; with port 0 the first one picks the port.
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(cpus.len());
    let mut bound = addr;
    for _ in &cpus {
        let l = sys::reuseport_listener(bound, cfg.server.listen_backlog)
            .with_context(|| format!("binding the bid port {bound}"))?;
        bound = l.local_addr()?;
        listeners.push(l);
    }
    if cfg.bidding.rx_timestamps {
        // Kernel receive stamps (crate::rxtime): on every listener (accepted sockets inherit
        // them), then checked once, so the first requests are stamped too.
        use std::os::fd::AsRawFd;
        let ok = listeners
            .iter()
            .all(|l| crate::rxtime::enable(l.as_raw_fd()).is_ok())
            && crate::rxtime::probe(Duration::from_secs(1));
        if ok {
            tracing::info!("requests count their age from the kernel's receive stamps");
        } else {
            tracing::warn!(
                "the kernel gives no TCP receive stamps: requests count their age from the read"
            );
            cfg.bidding.rx_timestamps = false;
        }
    }
    let admin = TcpListener::bind(admin_addr)
        .with_context(|| format!("binding the admin port {admin_addr}"))?;
    let admin_bound = admin.local_addr()?;

    sys::block_term_signals().context("blocking SIGTERM/SIGINT")?;
    let notice = notice_setup(&cfg, bound, &node)?;
    // The CA that verifies rediss:// servers, read once (checked by Config::check already).
    let redis_ca = if cfg.tls.redis_ca_file.is_empty() {
        None
    } else {
        Some(
            crate::config::read_ca_file(&cfg.tls.redis_ca_file)
                .map_err(anyhow::Error::msg)
                .context("tls.redis_ca_file")?,
        )
    };
    // Helper threads (everything but the event loops) start on a thread placed like a helper,
    // so every thread they create — librdkafka's included — inherits the CPU set, policy and
    // nice value of `[threads]`; the core threads, spawned by main below, pin themselves.
    let placement = crate::threads::HelperPlacement::resolve(
        &cfg.threads.helper_cpus,
        cfg.threads.helper_policy,
        cfg.threads.helper_nice,
        &sys::allowed_cpus().context("reading the CPU affinity")?,
        &cpus,
    )
    .map_err(anyhow::Error::msg)
    .context("config key threads.helper_cpus")?;
    tracing::info!(
        cpus = ?placement.cpus,
        apart_from_cores = placement.apart_from_cores,
        policy = placement.policy.as_str(),
        nice = placement.nice,
        "helper threads placed"
    );
    let started = placement.run_placed(|| -> Result<_> {
        // Events: one sink per core from the pipeline, or counting sinks when disabled.
        let (pipe, sinks): (Option<pipeline::Pipeline>, Vec<Box<dyn EventSink>>) =
            if cfg.events.enabled {
                let (p, s) = pipeline::Pipeline::start(
                    &pipeline_config(&cfg, &node, redis_ca.as_ref()),
                    cpus.len(),
                )
                .context("starting the event pipeline")?;
                let sinks = s
                    .into_iter()
                    .map(|s| Box::new(s) as Box<dyn EventSink>)
                    .collect();
                (Some(p), sinks)
            } else {
                let sinks = cpus
                    .iter()
                    .map(|_| Box::new(CountingSink::default()) as Box<dyn EventSink>)
                    .collect();
                (None, sinks)
            };
        // Profiles: the replica fills in the background; each core gets its own reader.
        let (replicator, reader) = if cfg.profiles.redis_url.is_empty() {
            (None, None)
        } else {
            let rc = profile_cache::ReplicaConfig {
                redis_url: cfg.profiles.redis_url.clone(),
                redis_ca_pem: redis_ca.clone(),
                namespace: cfg.profiles.namespace.clone(),
                expected_profiles: cfg.profiles.expected_profiles,
                max_staleness: Duration::from_millis(cfg.profiles.max_staleness_ms),
                snapshot_path: (!cfg.profiles.snapshot_path.is_empty())
                    .then(|| cfg.profiles.snapshot_path.clone().into()),
                snapshot_interval: Duration::from_secs(cfg.profiles.snapshot_interval_s),
                follow_fifo_priority: (cfg.profiles.replica_fifo_priority > 0)
                    .then_some(cfg.profiles.replica_fifo_priority),
                ..profile_cache::ReplicaConfig::default()
            };
            let (rep, rd) = profile_cache::start(&rc).context("starting the profile replica")?;
            (Some(rep), Some(rd))
        };
        // Live campaigns and budget leases: one control thread (crate::budget decides which).
        let crate::budget::Started {
            control,
            live,
            feeds,
            status: budget_status,
            cores: core_budgets,
        } = crate::budget::start(&cfg, &node, cpus.len(), &campaigns, redis_ca.as_ref())?;
        Ok((
            pipe,
            sinks,
            replicator,
            reader,
            live,
            feeds,
            budget_status,
            core_budgets,
            control,
        ))
    });
    let (
        pipe,
        mut sinks,
        replicator,
        reader,
        live,
        mut feeds,
        budget_status,
        mut core_budgets,
        _control,
    ) = started?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        shutdown: shutdown.clone(),
        campaigns_loaded: AtomicBool::new(false),
        cores_running: AtomicUsize::new(0),
        n_cores: cpus.len(),
        published: (0..cpus.len())
            .map(|i| Arc::new(Published::new(i as u16)))
            .collect(),
        config_toml: cfg.redacted().to_toml(),
        drivers: Mutex::new(Vec::new()),
        pipeline: Mutex::new(pipe),
        profiles: Mutex::new(reader.clone()),
        live,
        budget: budget_status,
    });
    placement
        .run_placed(|| crate::admin::spawn(admin, shared.clone()))
        .context("starting the admin thread")?;

    let lc = loop_config(&cfg);
    let mut threads = Vec::with_capacity(cpus.len());
    for (i, (&cpu, listener)) in cpus.iter().zip(listeners).enumerate() {
        let core_cfg = core_config(&cfg, i as u16, &node, &notice);
        let campaigns = campaigns.clone();
        let sink = sinks.remove(0);
        let feed = (!feeds.is_empty()).then(|| feeds.remove(0));
        let budget = (!core_budgets.is_empty()).then(|| core_budgets.remove(0));
        let profiles = reader.clone();
        let lc = lc.clone();
        let shared = shared.clone();
        let want = cfg.server.driver;
        let t = std::thread::Builder::new()
            .name(format!("helios-core-{i}"))
            .spawn(move || {
                let parts = CoreParts {
                    core_cfg,
                    campaigns,
                    sink,
                    profiles,
                    feed,
                    budget,
                };
                core_thread(i, cpu, want, parts, listener, lc, shared)
            })
            .context("spawning a core thread")?;
        threads.push(t);
    }
    // Main is a helper too from here on (its signal wait, the shutdown, `helios-signal`).
    if let Err(e) = placement.apply_to_current_thread() {
        tracing::warn!(error = %e, "threads: cannot place the main thread");
    }
    shared.campaigns_loaded.store(true, Ordering::Relaxed);
    tracing::info!(
        bid = %bound,
        admin = %admin_bound,
        cores = ?cpus,
        driver = cfg.server.driver.as_str(),
        null = cfg.server.null,
        campaigns = campaigns.campaigns.len(),
        "listening"
    );

    // Wait for a signal, or for a core thread to end on its own (an error).
    let mut failed = false;
    loop {
        match sys::wait_term_signal_timeout(Duration::from_millis(200)) {
            Ok(Some(sig)) => {
                tracing::info!(signal = sig, "shutting down: draining connections");
                break;
            }
            Ok(None) => {}
            Err(e) => return Err(e).context("waiting for signals"),
        }
        if threads.iter().any(|t| t.is_finished()) {
            tracing::error!("a core's event loop ended unexpectedly; shutting down");
            failed = true;
            break;
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("helios-signal".into())
        .spawn(|| {
            if let Ok(sig) = sys::wait_term_signal() {
                tracing::warn!(signal = sig, "second signal: exiting at once");
                std::process::exit(130);
            }
        })
        .context("spawning the signal thread")?;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "core loop failed");
                failed = true;
            }
            Err(_) => {
                tracing::error!("core thread panicked");
                failed = true;
            }
        }
    }
    // The cores have dropped their sinks: flush every queued event to Kafka (or the spool).
    let pipe = shared.pipeline.lock().ok().and_then(|mut p| p.take());
    if let Some(p) = pipe {
        let r = p.shutdown(Duration::from_millis(cfg.events.shutdown_timeout_ms));
        tracing::info!(
            produced = r.produced,
            spooled = r.spooled,
            spool_bytes_left = r.spool_bytes_left,
            dropped = r.dropped,
            left_in_queues = r.left_in_queues,
            clean = r.clean,
            "events flushed"
        );
        if r.dropped > 0 || r.left_in_queues > 0 {
            failed = true;
        }
    }
    if let Some(r) = replicator {
        r.stop();
    }
    drop(reader);
    tracing::info!("stopped");
    if failed {
        anyhow::bail!("one or more cores failed");
    }
    Ok(())
}

/// What a core thread is handed at spawn.
struct CoreParts {
    core_cfg: CoreConfig,
    campaigns: Arc<CompiledSet>,
    sink: Box<dyn EventSink>,
    profiles: Option<profile_cache::Reader>,
    feed: Option<crate::campaign_feed::CoreFeed>,
    budget: Option<crate::budget::CoreBudget>,
}

fn core_thread(
    index: usize,
    cpu: usize,
    want: Driver,
    parts: CoreParts,
    listener: TcpListener,
    lc: LoopConfig,
    shared: Arc<Shared>,
) -> Result<()> {
    sys::pin_current_thread(cpu).with_context(|| format!("pinning core {index} to CPU {cpu}"))?;
    let mut core = Core::new(
        parts.core_cfg,
        parts.campaigns,
        parts.sink,
        Clock::new(),
        shared.published[index].clone(),
        parts.profiles,
    );
    if let Some(f) = parts.feed {
        core.attach_feed(f);
    }
    if let Some(b) = parts.budget {
        core.attach_budget(b);
    }
    let shutdown = shared.shutdown.clone();
    let ring = match want {
        Driver::Uring => match driver::uring::Ring::new(&lc) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(core = index, error = %e, "io_uring cannot be set up; falling back to epoll");
                None
            }
        },
        Driver::Epoll => None,
    };
    let desc = match &ring {
        Some(r) => format!("uring({})", r.flags),
        None => "epoll".to_owned(),
    };
    tracing::info!(core = index, cpu, driver = %desc, "event loop starting");
    if let Ok(mut d) = shared.drivers.lock() {
        d.push((index, desc));
    }
    shared.cores_running.fetch_add(1, Ordering::Relaxed);
    let r = match ring {
        Some(ring) => driver::uring::run(ring, core, listener, lc, shutdown),
        None => driver::epoll::run(core, listener, lc, shutdown),
    };
    shared.cores_running.fetch_sub(1, Ordering::Relaxed);
    r.with_context(|| format!("core {index}"))
}

//! `helios-glommio`: the design's named reference event loop, glommio 0.9, carrying the
//! appliance's own sans-IO [`Core`] — the same HTTP parsing, routing, decoding, decision, encoding
//! and notice signing as `helios` — on one pinned core, so `make bench` can measure it side by
//! side with the appliance's io_uring and epoll drivers.
//!
//! Thin on purpose: one executor pinned with `Placement::Fixed(cpu)`, one `SO_REUSEPORT`
//! listener, one task per connection (read into the connection's buffer, `Core::on_input`, write
//! the answers), one ticker task for the core's periodic step (pacing, metrics). Events are
//! counted, not sent (as `helios` with `events.enabled = false`); no admin port, no graceful
//! drain (SIGTERM ends the process). Not a product driver: a measuring stick.
//!
//! Locked memory: glommio registers `io_memory` with io_uring and this machine kind allows 8 MiB
//! of locked memory per user (PLATFORM.md); its default (10 MiB per ring) would fail and fall
//! back with a warning, so `--io-memory-kib` defaults to 512 KiB (sockets do not use it).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use appliance::config::Config;
use appliance::core::{Conn, Core};
use appliance::events::CountingSink;
use appliance::metrics::Published;
use appliance::server::{NoticeSetup, core_config};
use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// Serve the appliance's core with a glommio 0.9 executor on one pinned CPU (bench reference).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Bid port address (bound with SO_REUSEPORT).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// CPU the executor is pinned to (`Placement::Fixed`).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Answer every bid request 204 without bidding (the HTTP stack's ceiling), as `helios --null`.
    #[arg(long)]
    null: bool,
    /// Campaigns file (JSON, docs/CAMPAIGNS.md); none = every request no-bids.
    #[arg(long)]
    campaigns: Option<String>,
    /// HMAC key of the notice URLs (as `notices.key`).
    #[arg(long, env = "HELIOS_NOTICES_KEY", default_value = "bench-notice-key")]
    notice_key: String,
    /// Memory glommio registers with io_uring for storage I/O, KiB (sockets do not use it;
    /// keep it small: 8 MiB of locked memory per user here).
    #[arg(long, default_value_t = 512)]
    io_memory_kib: usize,
    /// Period of the core's step (pacing tick, metrics copy), ms.
    #[arg(long, default_value_t = 250)]
    tick_ms: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = Config::default();
    cfg.server.listen = cli.listen.clone();
    cfg.server.null = cli.null;
    let campaigns = match &cli.campaigns {
        None => shards::CompiledSet::empty(),
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading {p}"))?;
            shards::CompiledSet::parse(&b).with_context(|| format!("campaigns {p}"))?
        }
    };
    let notice = NoticeSetup {
        key: cli.notice_key.clone().into_bytes(),
        base: format!("http://{}", cli.listen),
    };
    let core_cfg = core_config(&cfg, 0, "bench-glommio", &notice);
    let max_in = core_cfg.max_conn_input();
    let tick = Duration::from_millis(cli.tick_ms.max(1));
    let addr = cli.listen.clone();
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cli.cpu))
        .name("helios-glommio")
        .io_memory(cli.io_memory_kib * 1024)
        .spawn(move || async move {
            let core = Core::new(
                core_cfg,
                campaigns,
                Box::new(CountingSink::default()),
                quanta::Clock::new(),
                Arc::new(Published::new(0)),
                None,
            );
            serve(core, &addr, max_in, tick).await
        })
        .map_err(|e| anyhow::anyhow!("starting the glommio executor: {e:?}"))?;
    tracing::info!(listen = %cli.listen, cpu = cli.cpu, null = cli.null, "listening");
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("executor thread: {e:?}"))?
}

async fn serve(core: Core, addr: &str, max_in: usize, tick: Duration) -> Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("binding {addr}: {e:?}"))?;
    let core = Rc::new(RefCell::new(core));
    let pool: Rc<RefCell<Vec<Conn>>> = Rc::new(RefCell::new(Vec::new()));
    {
        let core = core.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                core.borrow_mut().publish();
            }
        })
        .detach();
    }
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (core, pool) = (core.clone(), pool.clone());
        glommio::spawn_local(async move {
            let conn = pool.borrow_mut().pop();
            let mut conn = conn.unwrap_or_else(|| core.borrow().new_conn());
            connection(&core, stream, &mut conn, max_in).await;
            conn.reset();
            pool.borrow_mut().push(conn);
        })
        .detach();
    }
}

/// One connection: read what arrives into its buffer, let the core answer, write the answers.
async fn connection(core: &RefCell<Core>, mut stream: TcpStream, conn: &mut Conn, max_in: usize) {
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !conn.push(&chunk[..n]) {
            return; // past the input bound (max_in): as the appliance, close
        }
        debug_assert!(conn.input_room() <= max_in);
        {
            let mut c = core.borrow_mut();
            c.begin_turn();
            c.on_input(conn);
        }
        while !conn.out.is_empty() {
            if stream.write_all(&conn.out).await.is_err() {
                return;
            }
            conn.out.clear();
            if conn.has_pending_input() && !conn.wants_close() {
                // Requests held back by the output high-water mark.
                core.borrow_mut().on_input(conn);
            }
        }
        if conn.wants_close() {
            let _ = stream.close().await;
            return;
        }
    }
}

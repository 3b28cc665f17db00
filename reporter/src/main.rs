//! `helios-reporter`: the ingest (Kafka → PostgreSQL) and the API/dashboard in one process, or
//! either alone (`--mode`); `token` mints a JWT; `migrate` applies the migrations.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use reporter::api::{self, AppState, auth::Auth, pool::Pool};
use reporter::config::{Cli, Command, Mode, ServeArgs};
use reporter::db;
use reporter::ingest::{consumer, stats::IngestStats};
use tokio::sync::watch;

fn main() -> Result<()> {
    // One crypto provider for every TLS connection (ring, the workspace's only one); an error
    // means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(t)) => {
            let auth = Auth::new(&t.secret.load()?)?;
            let tok = auth.mint(t.role, t.advertiser, &t.sub, t.ttl)?;
            println!("{tok}");
            Ok(())
        }
        Some(Command::Migrate { db: d }) => runtime()?.block_on(async {
            init_logs("info");
            let mut c = db::connect(&d.pg_url).await?;
            let applied = db::migrate(&mut c).await?;
            tracing::info!(?applied, "migrations done");
            Ok(())
        }),
        Some(Command::Serve(s)) => runtime()?.block_on(serve(*s)),
        None => runtime()?.block_on(serve(cli.serve)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("reporter")
        .build()
        .context("building the tokio runtime")
}

fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
}

/// Applies the migrations, waiting (bounded backoff) while PostgreSQL is unreachable; `None`
/// when shutdown was asked meanwhile.
async fn migrate_when_reachable(url: &str, stop: &mut watch::Receiver<bool>) -> Result<Option<()>> {
    let mut delay = reporter::ingest::writer::BACKOFF_MIN;
    loop {
        let attempt = async {
            let mut c = db::connect(url).await?;
            db::migrate(&mut c).await
        };
        match attempt.await {
            Ok(applied) => {
                tracing::info!(?applied, "database ready");
                return Ok(Some(()));
            }
            // Only an unreachable server is waited for; a failing migration or a server whose
            // certificate is refused (a configuration error, not an outage) is fatal.
            Err(e)
                if !is_tls_rejection(&e)
                    && e.chain().any(|c| {
                        c.is::<std::io::Error>()
                            || c.downcast_ref::<tokio_postgres::Error>().is_some_and(|p| {
                                p.is_closed()
                                    || p.code().is_some_and(|c| {
                                        c.code().starts_with("08") || c.code().starts_with("57P")
                                    })
                            })
                    }) =>
            {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64,
                    "PostgreSQL unreachable at start; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|v| *v) => return Ok(None),
                }
                delay = (delay * 2).min(reporter::ingest::writer::BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` is a TLS handshake the client refused (bad certificate, unknown issuer, wrong
/// host name): retrying cannot help, so the reporter exits and says why.
fn is_tls_rejection(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<rustls::Error>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
    })
}

async fn serve(s: ServeArgs) -> Result<()> {
    init_logs(&s.log);
    let stats = Arc::new(IngestStats::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    if migrate_when_reachable(&s.db.pg_url, &mut stop_rx)
        .await?
        .is_none()
    {
        return Ok(());
    }

    let ingest = if s.mode != Mode::Api {
        let cfg = s.ingest();
        tracing::info!(brokers = %cfg.brokers, group = %cfg.group_id, topics = ?cfg.topics,
            batch_max = cfg.batch_max, "ingest starting");
        Some(tokio::spawn(consumer::run(
            cfg,
            s.db.pg_url.clone(),
            stats.clone(),
            stop_rx.clone(),
        )))
    } else {
        None
    };

    let api = if s.mode != Mode::Ingest {
        let auth = Auth::new(&s.secret.load()?)?;
        let state = AppState {
            db: Arc::new(Pool::new(&s.db.pg_url, s.api_connections as usize)),
            auth: Arc::new(auth),
            ingest: stats.clone(),
        };
        if let Some(d) = &s.dashboard_dir
            && !d.join("index.html").exists()
        {
            tracing::warn!(dir = %d.display(), "no index.html in the dashboard directory (run scripts/build-dashboard.sh)");
        }
        let mut app = api::router(state, s.dashboard_dir.clone());
        if let Some(url) = &s.campaigns_redis_url {
            let ca = match &s.campaigns_redis_ca_file {
                Some(f) => Some(
                    std::fs::read(f)
                        .with_context(|| format!("--campaigns-redis-ca-file {}", f.display()))?,
                ),
                None => None,
            };
            let cp = Arc::new(api::manage::ControlPlane::with_redis_ca(
                &s.db.pg_url,
                url,
                ca.as_deref(),
            )?);
            api::manage::spawn_republisher(Arc::clone(&cp));
            app = app.layer(axum::Extension(cp));
            tracing::info!("campaign management on (publishing to redis)");
        }
        let app = app.layer(tower_http::trace::TraceLayer::new_for_http());
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .with_context(|| format!("binding {}", s.listen))?;
        tracing::info!(listen = %s.listen, "api listening");
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
                .context("serving the api")
        }))
    } else {
        None
    };

    if let Some(h) = ingest {
        h.await.context("ingest task")??;
        tracing::info!("ingest stopped");
    }
    if let Some(h) = api {
        h.await.context("api task")??;
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

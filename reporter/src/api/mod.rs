//! The REST API (`/api/v1/…`, JSON) and the dashboard's static files, on one axum router.
//!
//! - [`auth`]: JWT bearer tokens (HS256): verification, minting, the caller's [`auth::Scope`].
//! - [`error`]: the JSON error bodies (401, 403, 400, 404, 503).
//! - [`pool`]: a fixed set of PostgreSQL connections shared by the handlers.
//! - [`routes`]: the handlers; every query is filtered by the caller's scope in SQL.
//! - [`manage`], [`publish`]: campaign management (create/change campaigns, publish to Redis).
//! - [`openapi`]: the OpenAPI 3.1 document served at `/api/v1/openapi.json`.
//!
//! Runs on the tokio runtime's worker threads; state is read-only after start (the pool, the
//! key, the ingest counters). Must never: answer an advertiser with another advertiser's rows.

pub mod auth;
pub mod error;
pub mod manage;
pub mod manage_doc;
pub mod openapi;
pub mod pool;
pub mod publish;
pub mod routes;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;

use crate::ingest::stats::IngestStats;

/// Shared, read-only state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Arc<pool::Pool>,
    pub auth: Arc<auth::Auth>,
    pub ingest: Arc<IngestStats>,
}

/// The whole HTTP surface: the API, and the dashboard from `dashboard_dir` when given.
pub fn router(state: AppState, dashboard_dir: Option<PathBuf>) -> Router {
    let api = routes::api_router()
        .merge(manage::router())
        .with_state(state);
    match dashboard_dir {
        Some(dir) => {
            let index = dir.join("index.html");
            let files = tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(index));
            api.fallback_service(files)
        }
        None => api,
    }
}

//! A fixed number of PostgreSQL connections for the API, handed out round-robin. A slot is
//! connected on first use and replaced when its connection closed (one reconnect at a time per
//! slot). tokio-postgres pipelines concurrent queries on one connection, so a handful is enough.
//!
//! While PostgreSQL is unreachable, [`Pool::get`] answers [`ApiError::Unavailable`] (a JSON
//! 503): after a failed connection attempt, requests for the next [`DOWN_HOLD`] fail at once
//! instead of each trying (and waiting) again. Must never: block a request longer than one
//! connection attempt ([`crate::db::CONNECT_TIMEOUT`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tokio_postgres::Client;

use super::error::ApiError;

/// How long a failed connection attempt makes the pool answer 503 without trying again.
pub const DOWN_HOLD: Duration = Duration::from_millis(500);

const UNREACHABLE: &str = "PostgreSQL is unreachable; try again in a few seconds";

#[derive(Debug)]
pub struct Pool {
    url: String,
    slots: Vec<RwLock<Option<Arc<Client>>>>,
    next: AtomicUsize,
    /// Milliseconds since `epoch` before which no new connection is attempted.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// Requests answered 503 because no connection could be had.
    pub unavailable: AtomicU64,
}

impl Pool {
    /// A pool of `size` (1..=64) slots, connected on first use.
    pub fn new(url: &str, size: usize) -> Pool {
        Pool {
            url: url.to_owned(),
            slots: (0..size.clamp(1, 64)).map(|_| RwLock::new(None)).collect(),
            next: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            unavailable: AtomicU64::new(0),
        }
    }

    /// A pool with every slot connected now (fails if PostgreSQL is unreachable).
    pub async fn connect(url: &str, size: usize) -> anyhow::Result<Pool> {
        let p = Pool::new(url, size);
        for slot in &p.slots {
            *slot.write().await = Some(Arc::new(crate::db::connect(url).await?));
        }
        Ok(p)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A live connection (connecting its slot if it has none or it was closed).
    pub async fn get(&self) -> Result<Arc<Client>, ApiError> {
        let slot = &self.slots[self.next.fetch_add(1, Relaxed) % self.slots.len()];
        if let Some(c) = slot.read().await.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let mut w = slot.write().await;
        if let Some(c) = w.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        if self.now_ms() < self.down_until_ms.load(Relaxed) {
            self.unavailable.fetch_add(1, Relaxed);
            return Err(ApiError::Unavailable(UNREACHABLE.into()));
        }
        match crate::db::connect(&self.url).await {
            Ok(fresh) => {
                let c = Arc::new(fresh);
                *w = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                *w = None;
                self.down_until_ms
                    .store(self.now_ms() + DOWN_HOLD.as_millis() as u64, Relaxed);
                self.unavailable.fetch_add(1, Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "api: PostgreSQL unreachable");
                Err(ApiError::Unavailable(UNREACHABLE.into()))
            }
        }
    }
}

//! A fixed number of PostgreSQL connections for the API, handed out round-robin. A closed
//! connection is replaced on next use (one reconnect at a time per slot). tokio-postgres
//! pipelines concurrent queries on one connection, so a handful is enough.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::sync::RwLock;
use tokio_postgres::Client;

use super::error::ApiError;

#[derive(Debug)]
pub struct Pool {
    url: String,
    slots: Vec<RwLock<Arc<Client>>>,
    next: AtomicUsize,
}

impl Pool {
    /// Opens `size` (1..=64) connections.
    pub async fn connect(url: &str, size: usize) -> anyhow::Result<Pool> {
        let mut slots = Vec::with_capacity(size.clamp(1, 64));
        for _ in 0..size.clamp(1, 64) {
            slots.push(RwLock::new(Arc::new(crate::db::connect(url).await?)));
        }
        Ok(Pool {
            url: url.to_owned(),
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// A live connection (reconnecting its slot if it was closed).
    pub async fn get(&self) -> Result<Arc<Client>, ApiError> {
        let slot = &self.slots[self.next.fetch_add(1, Relaxed) % self.slots.len()];
        let c = slot.read().await.clone();
        if !c.is_closed() {
            return Ok(c);
        }
        let mut w = slot.write().await;
        if w.is_closed() {
            let fresh = crate::db::connect(&self.url)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            *w = Arc::new(fresh);
        }
        Ok(w.clone())
    }
}

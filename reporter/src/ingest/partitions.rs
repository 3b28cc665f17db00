//! The raw table's day partitions: created before a batch needs them, dropped when older than
//! the retention. DDL runs in its own short transaction under a transaction-level advisory
//! lock, so several reporters never race on the same `CREATE`/`DROP`.
//!
//! Bounds: a partition is only created for days within `[today - retention + 1, today +
//! FUTURE_DAYS]`; events outside that window are not stored (counted as out of range), so a
//! hostile timestamp cannot make the reporter create thousands of tables.

use std::collections::HashSet;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::day;

/// How many days ahead of today an event may be dated (clock skew between nodes).
pub const FUTURE_DAYS: i32 = 2;
const DDL_LOCK: i64 = 0x4845_4c49_4f53_0002;

/// The window of days the raw table accepts, from the retention and today's date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: i32,
    pub last: i32,
}

impl Window {
    pub fn new(today: i32, retention_days: u32) -> Window {
        let keep = retention_days.clamp(1, 3650) as i32;
        Window {
            first: today - keep + 1,
            last: today + FUTURE_DAYS,
        }
    }
    pub fn contains(&self, d: i32) -> bool {
        (self.first..=self.last).contains(&d)
    }
}

/// Remembers which partitions exist so that a batch costs no DDL round trip in the steady state.
#[derive(Debug, Default)]
pub struct Partitions {
    known: HashSet<i32>,
}

impl Partitions {
    /// Creates the partitions for `days` not yet known to exist.
    pub async fn ensure(&mut self, client: &mut Client, days: &[i32]) -> Result<()> {
        let missing: Vec<i32> = days
            .iter()
            .copied()
            .filter(|d| !self.known.contains(d))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        for d in &missing {
            let name = day::partition_name(*d);
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF events FOR VALUES FROM ({d}) TO ({})",
                d + 1
            ))
            .await
            .with_context(|| format!("creating partition {name}"))?;
        }
        tx.commit().await?;
        self.known.extend(missing);
        Ok(())
    }

    /// Drops every partition of days before `window.first`; returns the names dropped.
    pub async fn drop_expired(
        &mut self,
        client: &mut Client,
        window: Window,
    ) -> Result<Vec<String>> {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        let rows = tx
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = 'events'",
                &[],
            )
            .await?;
        let mut dropped = Vec::new();
        for r in rows {
            let name: String = r.get(0);
            let Some(d) = day::parse_partition_name(&name) else {
                continue;
            };
            if d < window.first {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await
                    .with_context(|| format!("dropping partition {name}"))?;
                self.known.remove(&d);
                dropped.push(name);
            }
        }
        tx.commit().await?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds() {
        let w = Window::new(100, 30);
        assert_eq!(
            w,
            Window {
                first: 71,
                last: 102
            }
        );
        assert!(w.contains(71) && w.contains(102));
        assert!(!w.contains(70) && !w.contains(103));
        assert_eq!(Window::new(100, 0).first, 100, "at least today is kept");
    }
}

//! Writes one batch of events in one transaction. Owned by the writer task (one connection).
//!
//! 1. `COPY … FROM STDIN (FORMAT binary)` into a temporary staging table (emptied on commit).
//! 2. One statement: insert the staging rows into `events` `ON CONFLICT DO NOTHING RETURNING`
//!    the rows actually inserted, aggregate *those* per minute, expand to the hour and day and to
//!    every dimension, and upsert `rollups` and `nobid_rollups` (rows sorted by key, so two
//!    reporters lock rollup rows in the same order).
//! 3. Record the next offsets per partition in `ingest_offsets`.
//! 4. Commit. Only then may the caller commit the Kafka offsets.
//!
//! A batch replayed after a crash inserts nothing and so adds nothing. Must never: add to a
//! rollup a row the raw insert skipped; retry a batch without a bound.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::pin_mut;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::partitions::{Partitions, Window};
use super::row::Row;

/// Flags bit of test requests (never charged): kept raw, left out of the rollups.
pub const TEST_FLAG: i16 = codec::event::flags::TEST as i16;

/// Per-session setup of the writer's connection: the staging table, and enough sort memory for a
/// batch's aggregation to stay in memory (a 50,000-event batch sorts ~10 MB).
const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS staging (LIKE events) ON COMMIT DELETE ROWS; \
    SET work_mem = '64MB'";

const COPY: &str = "COPY staging (day, event_id, kind, flags, reason, core, ts, bid_ts, trace_id, node, \
    exchange, request_id, imp_id, advertiser_id, campaign_id, creative_id, bid_price_micros, \
    clear_price_micros, currency, country, device_type, site_or_app) FROM STDIN (FORMAT binary)";

const COPY_TYPES: &[Type] = &[
    Type::INT4,
    Type::BYTEA,
    Type::INT2,
    Type::INT2,
    Type::INT4,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
];

/// The insert-and-fold statement. `$1` is the test flag bit.
const FOLD: &str = "
WITH ins AS (
    INSERT INTO events SELECT * FROM staging
    ON CONFLICT DO NOTHING
    RETURNING kind, flags, reason, ts, exchange, advertiser_id, campaign_id, creative_id,
              site_or_app, country, device_type, bid_price_micros, clear_price_micros
),
counted AS (SELECT * FROM ins WHERE flags & $1 = 0),
grans (gran, unit) AS (VALUES (1::smallint, 'minute'), (2::smallint, 'hour'), (3::smallint, 'day')),
per_minute AS (
    SELECT date_trunc('minute', ts) AS minute, advertiser_id, campaign_id, creative_id,
           site_or_app, country, device_type,
           count(*) FILTER (WHERE kind = 1) AS bids,
           count(*) FILTER (WHERE kind = 2) AS nobids,
           count(*) FILTER (WHERE kind = 3) AS wins,
           count(*) FILTER (WHERE kind = 5) AS losses,
           count(*) FILTER (WHERE kind = 4) AS impressions,
           count(*) FILTER (WHERE kind = 6) AS clicks,
           coalesce(sum(bid_price_micros) FILTER (WHERE kind = 1), 0) AS bid_cpm,
           coalesce(sum(clear_price_micros) FILTER (WHERE kind = 3), 0) AS win_cpm,
           coalesce(sum(clear_price_micros) FILTER (WHERE kind = 4), 0) AS spend_cpm,
           max(ts) AS last_ts
    FROM counted WHERE campaign_id <> 0
    GROUP BY 1, 2, 3, 4, 5, 6, 7
),
folded AS (
    SELECT g.gran, m.advertiser_id, m.campaign_id, d.dim, date_trunc(g.unit, m.minute) AS bucket,
           d.val, sum(bids)::bigint AS bids, sum(nobids)::bigint AS nobids, sum(wins)::bigint AS wins,
           sum(losses)::bigint AS losses, sum(impressions)::bigint AS impressions,
           sum(clicks)::bigint AS clicks, sum(bid_cpm)::bigint AS bid_cpm,
           sum(win_cpm)::bigint AS win_cpm, sum(spend_cpm)::bigint AS spend_cpm,
           max(last_ts) AS last_ts
    FROM per_minute m
    CROSS JOIN grans g
    CROSS JOIN LATERAL (VALUES (0::smallint, ''::text), (1::smallint, m.creative_id::text),
        (2::smallint, m.site_or_app), (3::smallint, m.country), (4::smallint, m.device_type::text)) d (dim, val)
    GROUP BY 1, 2, 3, 4, 5, 6
),
up AS (
    INSERT INTO rollups AS r (gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids,
        wins, losses, impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts)
    SELECT * FROM folded ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (gran, advertiser_id, campaign_id, dim, bucket, val) DO UPDATE SET
        bids = r.bids + excluded.bids, nobids = r.nobids + excluded.nobids,
        wins = r.wins + excluded.wins, losses = r.losses + excluded.losses,
        impressions = r.impressions + excluded.impressions, clicks = r.clicks + excluded.clicks,
        bid_cpm_micros = r.bid_cpm_micros + excluded.bid_cpm_micros,
        win_cpm_micros = r.win_cpm_micros + excluded.win_cpm_micros,
        spend_cpm_micros = r.spend_cpm_micros + excluded.spend_cpm_micros,
        last_ts = greatest(r.last_ts, excluded.last_ts)
    RETURNING 1
),
nobid_minute AS (
    SELECT date_trunc('minute', ts) AS minute, exchange, reason, count(*) AS n
    FROM counted WHERE kind = 2 GROUP BY 1, 2, 3
),
nb AS (
    INSERT INTO nobid_rollups AS n (gran, bucket, exchange, reason, nobids)
    SELECT g.gran, date_trunc(g.unit, m.minute), m.exchange, m.reason, sum(m.n)::bigint
    FROM nobid_minute m CROSS JOIN grans g
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (gran, bucket, exchange, reason) DO UPDATE SET nobids = n.nobids + excluded.nobids
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM up), (SELECT count(*) FROM nb)";

const OFFSETS: &str = "
INSERT INTO ingest_offsets (group_id, topic, partition, next_offset, updated_at)
SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x (t, p, o)
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET next_offset = greatest(ingest_offsets.next_offset, excluded.next_offset), updated_at = now()";

/// How many times a batch is tried before the writer gives up (and the process exits, to be
/// restarted: the offsets were not committed, so nothing is lost).
pub const MAX_ATTEMPTS: u32 = 5;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub rows: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub out_of_range: u64,
    pub rollup_rows: u64,
    pub elapsed: Duration,
}

/// Next offsets (last offset + 1) per (topic, partition) covered by a batch.
pub type Offsets = Vec<(String, i32, i64)>;

/// Testing hook: a pause inside the transaction, before `COMMIT`, so that a test can kill the
/// process while a batch is written but not committed. Zero in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultDelay(pub Duration);

#[derive(Debug)]
pub struct Writer {
    client: Client,
    group_id: String,
    retention_days: u32,
    partitions: Partitions,
    fault: FaultDelay,
}

impl Writer {
    pub async fn new(
        client: Client,
        group_id: &str,
        retention_days: u32,
        fault: FaultDelay,
    ) -> Result<Writer> {
        client
            .batch_execute(STAGING)
            .await
            .context("creating the staging table")?;
        Ok(Writer {
            client,
            group_id: group_id.to_owned(),
            retention_days,
            partitions: Partitions::default(),
            fault,
        })
    }

    pub fn window(&self) -> Window {
        Window::new(crate::day::today(), self.retention_days)
    }

    /// Drops the partitions older than the retention.
    pub async fn apply_retention(&mut self) -> Result<Vec<String>> {
        let w = self.window();
        self.partitions.drop_expired(&mut self.client, w).await
    }

    /// Writes `rows` and records `offsets`, retrying deadlocks and serialization failures a
    /// bounded number of times. Rows outside the retention window are left out and counted.
    pub async fn write(&mut self, rows: &[Row], offsets: &Offsets) -> Result<BatchOutcome> {
        let window = self.window();
        let keep: Vec<&Row> = rows.iter().filter(|r| window.contains(r.day)).collect();
        let out_of_range = (rows.len() - keep.len()) as u64;
        let mut days: Vec<i32> = keep.iter().map(|r| r.day).collect();
        days.sort_unstable();
        days.dedup();
        self.partitions.ensure(&mut self.client, &days).await?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write_once(&keep, offsets).await {
                Ok(mut o) => {
                    o.rows = rows.len() as u64;
                    o.out_of_range = out_of_range;
                    return Ok(o);
                }
                Err(e) if attempt < MAX_ATTEMPTS && retryable(&e) => {
                    tracing::warn!(attempt, error = %e, "batch retried");
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Err(e) => return Err(e).context("writing a batch"),
            }
        }
    }

    async fn write_once(
        &mut self,
        rows: &[&Row],
        offsets: &Offsets,
    ) -> Result<BatchOutcome, tokio_postgres::Error> {
        let started = Instant::now();
        let tx = self.client.transaction().await?;
        let sink = tx.copy_in(COPY).await?;
        let w = BinaryCopyInWriter::new(sink, COPY_TYPES);
        pin_mut!(w);
        for r in rows {
            w.as_mut()
                .write(&[
                    &r.day,
                    &r.event_id.as_slice(),
                    &r.kind,
                    &r.flags,
                    &r.reason,
                    &r.core,
                    &r.ts,
                    &r.bid_ts,
                    &r.trace_id.as_slice(),
                    &r.node,
                    &r.exchange,
                    &r.request_id,
                    &r.imp_id,
                    &r.advertiser_id,
                    &r.campaign_id,
                    &r.creative_id,
                    &r.bid_price_micros,
                    &r.clear_price_micros,
                    &r.currency,
                    &r.country,
                    &r.device_type,
                    &r.site_or_app,
                ])
                .await?;
        }
        w.finish().await?;
        let row = tx.query_one(FOLD, &[&TEST_FLAG]).await?;
        let inserted: i64 = row.get(0);
        let rollup_rows: i64 = row.get(1);
        let nobid_rows: i64 = row.get(2);
        if !offsets.is_empty() {
            let topics: Vec<&str> = offsets.iter().map(|o| o.0.as_str()).collect();
            let parts: Vec<i32> = offsets.iter().map(|o| o.1).collect();
            let next: Vec<i64> = offsets.iter().map(|o| o.2).collect();
            tx.execute(OFFSETS, &[&self.group_id, &topics, &parts, &next])
                .await?;
        }
        if !self.fault.0.is_zero() {
            tokio::time::sleep(self.fault.0).await;
        }
        tx.commit().await?;
        Ok(BatchOutcome {
            rows: 0,
            inserted: inserted as u64,
            duplicates: rows.len() as u64 - inserted as u64,
            out_of_range: 0,
            rollup_rows: (rollup_rows + nobid_rows) as u64,
            elapsed: started.elapsed(),
        })
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

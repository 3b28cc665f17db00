//! Ingest rate into PostgreSQL: the writer alone (COPY into staging → insert ON CONFLICT DO
//! NOTHING → rollup deltas folded in memory → COPY + one upsert, one transaction per batch), for
//! several batch sizes, fresh events and a full replay (every event already stored), side by
//! side with main's writer (`legacy` below: the rollups folded in SQL for every granularity ×
//! dimension, without the series index). Also the decode cost (rkyv check + row) per event on
//! one core.
//!
//! `HELIOS_PG_URL=… cargo bench -p helios-reporter --bench ingest_pg` (BENCH_EVENTS to change the
//! run size, default 1,000,000; BENCH_BATCHES, comma-separated batch sizes, default
//! 10000,50000,100000; BENCH_VARIANTS=before,after or either alone).

mod common;

use std::time::Instant;

use codec::event::Event;
use reporter::ingest::row::Row;
use reporter::ingest::writer::{FaultDelay, Writer};
use reporter::synth::{RunConfig, generate};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(pg) = common::pg_url_or_skip("ingest_pg") else {
        return;
    };
    let target: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let span = 6 * 3600 * 1_000_000_000u64;
    // ~1.9 events per request with the default mix.
    let mut cfg = RunConfig::small(11, target * 10 / 19, now - span, span);
    cfg.advertisers = 20;
    cfg.campaigns_per_advertiser = 10;
    cfg.sites = 2000;
    let events = generate(&cfg);
    println!(
        "run: {} events ({} requests) over 6 h, 200 campaigns, 2000 sites",
        events.len(),
        cfg.requests
    );

    // Decode cost: bytes → checked Event → Row, as the consumer task does per message.
    let bytes: Vec<Vec<u8>> = events.iter().map(|e| e.to_bytes().to_vec()).collect();
    let t = Instant::now();
    let mut rows: Vec<Row> = Vec::with_capacity(bytes.len());
    for b in &bytes {
        rows.push(Row::from_event(&Event::from_bytes(b).expect("valid")));
    }
    let d = t.elapsed();
    println!(
        "decode+row: {:.0} ns/event ({:.0} events/s on one core)",
        d.as_nanos() as f64 / rows.len() as f64,
        rows.len() as f64 / d.as_secs_f64()
    );
    drop(bytes);

    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 50_000, 100_000]);
    let variants: Vec<String> = std::env::var("BENCH_VARIANTS")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["before".into(), "after".into()]);
    for batch in batches {
        for variant in &variants {
            run_one(&pg, &rows, batch, variant == "before").await;
        }
    }
}

/// One batch size, one writer: fresh events, then the same events again (all duplicates).
async fn run_one(pg: &str, rows: &[Row], batch: usize, before: bool) {
    let label = if before {
        "before (main's SQL fold)"
    } else {
        "after (in-memory fold)"
    };
    println!(
        "batch {batch:>6} {label}: load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let db = common::BenchDb::create(pg, "helios_bench_ingest").await;
    let mut c = reporter::db::connect(&db.url).await.expect("connect");
    reporter::db::migrate(&mut c).await.expect("migrate");
    let mut w = if before {
        // main's schema had no series index.
        c.batch_execute("DROP INDEX rollups_totals")
            .await
            .expect("drop index");
        Either::Before(legacy::Writer::new(&db.url).await)
    } else {
        Either::After(Writer::new(
            &db.url,
            "bench",
            30,
            FaultDelay::default(),
            std::sync::Arc::new(reporter::ingest::stats::IngestStats::default()),
        ))
    };
    drop(c);
    let backend = w.backend_pid().await;
    let (pg0, me0) = (
        cpu_secs(&format!("/proc/{backend}/stat")),
        cpu_secs("/proc/self/stat"),
    );
    let t = Instant::now();
    let mut inserted = 0;
    for chunk in rows.chunks(batch) {
        inserted += w.write(chunk).await.0;
    }
    let fresh = t.elapsed();
    let (pg1, me1) = (
        cpu_secs(&format!("/proc/{backend}/stat")),
        cpu_secs("/proc/self/stat"),
    );
    let t = Instant::now();
    let mut dup = 0;
    for chunk in rows.chunks(batch) {
        dup += w.write(chunk).await.1;
    }
    let replay = t.elapsed();
    let check = reporter::db::connect(&db.url).await.expect("connect");
    let rollup_rows: i64 = check
        .query_one("SELECT count(*) FROM rollups", &[])
        .await
        .expect("count")
        .get(0);
    let per = |cpu: f64| cpu * 1e6 / rows.len() as f64;
    println!(
        "batch {batch:>6} {label}: CPU per fresh event: PostgreSQL backend {:.1} µs, this process {:.1} µs (1 PostgreSQL core ≈ {:.0} events/s)",
        per(pg1 - pg0),
        per(me1 - me0),
        rows.len() as f64 / (pg1 - pg0).max(1e-9),
    );
    println!(
        "batch {batch:>6} {label}: fresh {:>8.0} events/s ({inserted} rows in {:.2} s), replay {:>8.0} events/s ({dup} duplicates), {rollup_rows} rollup rows",
        rows.len() as f64 / fresh.as_secs_f64(),
        fresh.as_secs_f64(),
        rows.len() as f64 / replay.as_secs_f64(),
    );
    drop(w);
    drop(check);
    db.drop_db().await;
}

enum Either {
    Before(legacy::Writer),
    After(Writer),
}

impl Either {
    async fn backend_pid(&mut self) -> i32 {
        match self {
            Either::Before(w) => w.backend_pid().await,
            Either::After(w) => w.backend_pid().await.expect("pid"),
        }
    }
    /// (inserted, duplicates)
    async fn write(&mut self, rows: &[Row]) -> (u64, u64) {
        match self {
            Either::Before(w) => w.write(rows).await,
            Either::After(w) => {
                let o = w.write(rows, &Vec::new()).await.expect("write");
                (o.inserted, o.duplicates)
            }
        }
    }
}

/// main's writer (commit 3e33a91), verbatim in what reaches PostgreSQL: COPY into staging, then
/// one statement that inserts into `events` and folds the inserted rows into every
/// (granularity × dimension) family in SQL; JIT left at the server's default. Kept here only to
/// measure the change side by side.
mod legacy {
    use futures_util::pin_mut;
    use reporter::ingest::partitions::{Partitions, Window};
    use reporter::ingest::row::Row;
    use reporter::ingest::writer::TEST_FLAG;
    use tokio_postgres::Client;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;

    const STAGING: &str = "SET jit = default; CREATE TEMP TABLE IF NOT EXISTS staging (LIKE events) ON COMMIT DELETE ROWS; \
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

    pub struct Writer {
        client: Client,
        partitions: Partitions,
    }

    impl Writer {
        pub async fn new(url: &str) -> Writer {
            let client = reporter::db::connect(url).await.expect("connect");
            client.batch_execute(STAGING).await.expect("staging");
            Writer {
                client,
                partitions: Partitions::default(),
            }
        }

        pub async fn backend_pid(&mut self) -> i32 {
            self.client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get(0)
        }

        /// (inserted, duplicates)
        pub async fn write(&mut self, rows: &[Row]) -> (u64, u64) {
            let window = Window::new(reporter::day::today(), 30);
            let keep: Vec<&Row> = rows.iter().filter(|r| window.contains(r.day)).collect();
            let mut days: Vec<i32> = keep.iter().map(|r| r.day).collect();
            days.sort_unstable();
            days.dedup();
            self.partitions
                .ensure(&mut self.client, &days)
                .await
                .expect("partitions");
            let tx = self.client.transaction().await.expect("tx");
            let sink = tx.copy_in(COPY).await.expect("copy");
            let w = BinaryCopyInWriter::new(sink, COPY_TYPES);
            pin_mut!(w);
            for r in &keep {
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
                    .await
                    .expect("copy row");
            }
            w.finish().await.expect("copy end");
            let row = tx.query_one(FOLD, &[&TEST_FLAG]).await.expect("fold");
            tx.commit().await.expect("commit");
            let inserted: i64 = row.get(0);
            (inserted as u64, keep.len() as u64 - inserted as u64)
        }
    }
}

/// utime + stime of a process, seconds (from /proc/<pid>/stat; clock ticks of 1/100 s).
fn cpu_secs(stat: &str) -> f64 {
    let s = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

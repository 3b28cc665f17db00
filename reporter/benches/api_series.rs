//! API latency for 30-day campaign time series served from the rollups. The rollups are
//! generated directly in SQL as the ingest would have folded a 30-day run of about 107 million
//! raw events (200 campaigns of 20 advertisers, ~744 events per campaign-hour): hour rollups for
//! every dimension, minute and day rollups for the campaign totals (the families the ingest
//! keeps, `ingest::fold::FAMILIES`). Minute rows are generated for the last 2 days only: the
//! per-minute shape reads the last 24 h, and the other 28 days of minutes (8 M rows, 2.6 GB)
//! did not fit on the shared disk next to everything else. The raw events themselves are not generated (the API never
//! reads them). Then each reporter binary given (`--mode api`, which applies its migrations
//! first) answers sequential HTTP requests; p50/p95/p99 per query shape.
//!
//! `HELIOS_PG_URL=… cargo bench -p helios-reporter --bench api_series`. Environment:
//! BENCH_REQUESTS per shape (default 300); BENCH_REPORTERS=`label=/path/to/helios-reporter,…`
//! to compare binaries side by side on the same data, in that order (default: this build) —
//! put the older binary first, as the newer one's migrations stay applied; BENCH_DB_URL to reuse
//! an already generated database (not dropped) instead of generating one; BENCH_WITHOUT_INDEX=1
//! to measure every shape also without the series index of migration 0004, BENCH_DROP_INDEXES
//! (comma-separated names) also without those indexes; BENCH_PENDING=N to measure with N
//! not-yet-folded deltas in `rollup_pending` (session 5: the per-creative/site/country/device
//! rows the ingest defers; 90 % per-site, 10 % per-country, in the current hour, spread over
//! every campaign — what a few seconds of a 200,000 events/s stream leave between folds), which
//! the API adds to the folded rows (binaries with migration 0006 only; removed after).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reporter::api::auth::{Auth, Role};
use reporter::synth::Rng;

const CAMPAIGNS: i64 = 200;

/// Fills the rollups; returns (raw events represented, rollup rows).
const GENERATE: &str = "
WITH hours AS (
    SELECT h FROM generate_series(date_trunc('hour', now()) - interval '30 days',
                                  date_trunc('hour', now()) - interval '1 hour', interval '1 hour') h
), camp AS (
    SELECT c AS campaign_id, c / 100 AS advertiser_id FROM generate_series(0, 19) a, LATERAL
        (SELECT (a + 1) * 100 + k AS c FROM generate_series(1, 10) k) x
), base AS (
    SELECT h, advertiser_id, campaign_id,
           300 + ((campaign_id * 7 + extract(epoch FROM h)::bigint / 3600) % 61) AS bids
    FROM hours, camp
), f AS (
    SELECT h, advertiser_id, campaign_id, bids, bids / 4 AS wins, bids - bids / 4 AS losses,
           bids / 4 AS imps, bids / 200 AS clicks FROM base
)
INSERT INTO rollups
SELECT 2, advertiser_id, campaign_id, d.dim, h, d.val,
       bids / d.n, 0, wins / d.n, losses / d.n, imps / d.n, clicks / d.n,
       bids / d.n * 2500000, wins / d.n * 1500000, imps / d.n * 1500000, h + interval '59 minutes'
FROM f CROSS JOIN LATERAL (
    SELECT 0::smallint AS dim, ''::text AS val, 1 AS n
    UNION ALL SELECT 1, (campaign_id * 10 + k)::text, 2 FROM generate_series(0, 1) k
    UNION ALL SELECT 2, 'site' || ((campaign_id * 13 + extract(hour FROM h)::int * 7 + k) % 2000) || '.example', 20 FROM generate_series(0, 19) k
    UNION ALL SELECT 3, (ARRAY['USA','FRA','DEU','GBR'])[k], 4 FROM generate_series(1, 4) k
    UNION ALL SELECT 4, k::text, 3 FROM unnest(ARRAY[1, 2, 4]) k
) d";

const DAYS: &str = "
INSERT INTO rollups
SELECT 3, advertiser_id, campaign_id, dim, date_trunc('day', bucket), val, sum(bids), sum(nobids),
       sum(wins), sum(losses), sum(impressions), sum(clicks), sum(bid_cpm_micros),
       sum(win_cpm_micros), sum(spend_cpm_micros), max(last_ts)
FROM rollups WHERE gran = 2 AND dim = 0 GROUP BY 2, 3, 4, 5, 6";

const MINUTES: &str = "
INSERT INTO rollups
SELECT 1, r.advertiser_id, r.campaign_id, 0, r.bucket + m * interval '1 minute', '',
       r.bids / 60, 0, r.wins / 60, r.losses / 60, r.impressions / 60, r.clicks / 60,
       r.bid_cpm_micros / 60, r.win_cpm_micros / 60, r.spend_cpm_micros / 60, r.bucket + m * interval '1 minute'
FROM rollups r CROSS JOIN generate_series(0, 59) m WHERE r.gran = 2 AND r.dim = 0
  AND r.bucket >= date_trunc('hour', now()) - interval '2 days'";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(pg) = common::pg_url_or_skip("api_series") else {
        return;
    };
    let requests = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300usize);
    let (db, url) = match std::env::var("BENCH_DB_URL") {
        Ok(u) => (None, u),
        Err(_) => {
            let db = common::BenchDb::create(&pg, "helios_bench_api").await;
            let url = db.url.clone();
            (Some(db), url)
        }
    };
    let c = reporter::db::connect(&url).await.expect("connect");
    if db.is_some() {
        // The schema of the first binary measured: migrations up to 3 (0004 and later are
        // applied by the reporters themselves when they start).
        c.batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("schema_migrations");
        for &(v, name, sql) in reporter::db::MIGRATIONS.iter().filter(|m| m.0 <= 3) {
            c.batch_execute(sql).await.expect("migration");
            c.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&v, &name],
            )
            .await
            .expect("migration row");
        }
        let t = Instant::now();
        c.batch_execute("SET work_mem = '256MB'")
            .await
            .expect("work_mem");
        c.batch_execute(GENERATE).await.expect("hour rollups");
        c.batch_execute(DAYS).await.expect("day rollups");
        c.batch_execute(MINUTES).await.expect("minute rollups");
        c.batch_execute("VACUUM ANALYZE rollups")
            .await
            .expect("analyze");
        println!("generated in {:.0} s", t.elapsed().as_secs_f64());
    }
    let r = c
        .query_one(
            "SELECT count(*), (SELECT sum(bids + wins + losses + impressions + clicks) FROM rollups WHERE gran = 2 AND dim = 0)::bigint,
                    pg_size_pretty(coalesce(
                        (SELECT sum(pg_total_relation_size(relid))
                         FROM pg_partition_tree('rollups'))::bigint,
                        pg_total_relation_size('rollups')))
             FROM rollups",
            &[],
        )
        .await
        .expect("count");
    let (rows, events, size): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
    println!(
        "rollups: {rows} rows ({size}) standing for {events} raw events over 30 days, {CAMPAIGNS} campaigns"
    );
    let reporters: Vec<(String, String)> = match std::env::var("BENCH_REPORTERS") {
        Ok(list) => list
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        Err(_) => vec![("this build".to_owned(), common::reporter_bin())],
    };
    for (label, bin) in &reporters {
        measure(label, bin, &url, requests).await;
    }
    drop(c);
    if let Some(db) = db {
        db.drop_db().await;
    }
}

/// Starts `bin` in API mode on `url` and measures every query shape.
async fn measure(label: &str, bin: &str, url: &str, requests: usize) {
    let secret = "bench-secret-bench-secret-bench-secret";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new(bin)
        .args([
            "--mode",
            "api",
            "--pg-url",
            url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
        ])
        .env("HELIOS_JWT_SECRET", secret)
        .stdout(Stdio::null())
        .spawn()
        .expect("start reporter");
    let auth = Auth::new(secret.as_bytes()).expect("auth");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Up to 10 minutes: a newer binary first applies its migrations (an index on 14 M rows).
    let t = Instant::now();
    for _ in 0..6000 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "== {label} ({bin}): up after {:.1} s; load average {}",
        t.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // Every binary measured on vacuumed rollups: a migration that rewrites them (0009) leaves
    // the visibility map empty, and index-only scans read heap pages until autovacuum has been
    // there (soon after, on its own).
    let t = Instant::now();
    let c = reporter::db::connect(url).await.expect("connect");
    c.batch_execute("VACUUM ANALYZE rollups")
        .await
        .expect("vacuum");
    println!("   rollups vacuumed in {:.1} s", t.elapsed().as_secs_f64());
    drop(c);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let from = now - 30 * 86_400;
    let shapes: [(&str, String); 5] = [
        (
            "30 d, hourly (720 points)",
            format!("/api/v1/stats?from={from}&to={now}&granularity=hour&campaign_id=CID"),
        ),
        (
            "30 d, daily",
            format!("/api/v1/stats?from={from}&to={now}&granularity=day&campaign_id=CID"),
        ),
        (
            "last 24 h, per minute",
            format!(
                "/api/v1/stats?from={}&to={now}&granularity=minute&campaign_id=CID",
                now - 86_400
            ),
        ),
        (
            "30 d, hourly, top 10 sites",
            format!(
                "/api/v1/stats?from={from}&to={now}&granularity=hour&group_by=site&campaign_id=CID"
            ),
        ),
        (
            "campaign list, 30 d",
            format!("/api/v1/campaigns?from={from}&to={now}"),
        ),
    ];
    // With BENCH_WITHOUT_INDEX=1 (the series index of migration 0004) or
    // BENCH_DROP_INDEXES=name,… (any, e.g. `rollups_minutes,rollups_sites` of migration 0005),
    // every shape is measured twice, one run after the other: with the indexes, then without
    // them (dropped, and re-created after), same binary, same data.
    let mut names: Vec<String> = std::env::var("BENCH_DROP_INDEXES")
        .map(|v| v.split(',').map(|n| n.trim().to_owned()).collect())
        .unwrap_or_default();
    if std::env::var("BENCH_WITHOUT_INDEX").as_deref() == Ok("1") {
        names.push("rollups_totals".to_owned());
    }
    let db = reporter::db::connect(url).await.expect("connect");
    let has_pending = db
        .query_one("SELECT to_regclass('rollup_pending') IS NOT NULL", &[])
        .await
        .is_ok_and(|r| r.get::<_, bool>(0));
    let pendings: Vec<i64> = std::env::var("BENCH_PENDING")
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for pending in if pendings.is_empty() {
        vec![0]
    } else {
        pendings
    } {
        let ctx = (label, names.as_slice(), &db, has_pending);
        measure_with_pending(ctx, pending, &shapes, &http, &base, &auth, requests).await;
    }
    println!(
        "   load average after {label}: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Every shape with `pending` deltas in `rollup_pending` (removed after), with and without the
/// indexes named by BENCH_DROP_INDEXES / BENCH_WITHOUT_INDEX.
async fn measure_with_pending(
    (label, names, db, has_pending): (&str, &[String], &tokio_postgres::Client, bool),
    pending: i64,
    shapes: &[(&str, String)],
    http: &reqwest::Client,
    base: &str,
    auth: &Auth,
    requests: usize,
) {
    if pending > 0 && has_pending {
        db.batch_execute(&format!(
            "INSERT INTO rollup_pending
             SELECT 2, (c / 100), c, d, date_trunc('hour', now()),
                    CASE WHEN d = 2 THEN 'site' || (i % 2000) || '.example' ELSE 'USA' END,
                    1, 0, 0, 1, 0, 0, 2500000, 0, 0, now()
             FROM generate_series(1, {pending}) i,
                  LATERAL (SELECT ((i % 20) + 1) * 100 + (i / 20) % 10 + 1 AS c,
                                  (CASE WHEN i % 10 = 0 THEN 3 ELSE 2 END)::smallint AS d) x;
             ANALYZE rollup_pending"
        ))
        .await
        .expect("pending deltas");
        println!("-- {label}: with {pending} pending rollup deltas");
    } else if pending > 0 {
        println!("-- {label}: no rollup_pending table (binary before migration 0006)");
    }
    let mut defs: Vec<(String, String)> = Vec::new();
    for n in names.iter().filter(|n| !n.is_empty()) {
        if let Ok(Some(r)) = db
            .query_opt("SELECT pg_get_indexdef($1::text::regclass)", &[n])
            .await
        {
            defs.push((n.clone(), r.get(0)));
        }
    }
    let what = defs
        .iter()
        .map(|d| d.0.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let modes: Vec<bool> = if defs.is_empty() {
        vec![true]
    } else {
        vec![true, false]
    };
    for with_index in modes {
        if !with_index {
            for (n, _) in &defs {
                db.batch_execute(&format!("DROP INDEX {n}"))
                    .await
                    .expect("drop index");
            }
            println!("-- {label}, {pending} pending, without {what}:");
        } else if !defs.is_empty() {
            println!("-- {label}, {pending} pending, with {what}:");
        }
        run_shapes(shapes, http, base, auth, requests).await;
        if !with_index {
            for (_, def) in &defs {
                db.batch_execute(def).await.expect("re-create index");
            }
        }
    }
    if pending > 0 && has_pending {
        db.batch_execute("TRUNCATE rollup_pending")
            .await
            .expect("remove the pending deltas");
    }
}

async fn run_shapes(
    shapes: &[(&str, String)],
    http: &reqwest::Client,
    base: &str,
    auth: &Auth,
    requests: usize,
) {
    let mut rng = Rng::new(3);
    for (name, path) in shapes {
        let mut lat = Vec::with_capacity(requests);
        for i in 0..requests + 20 {
            let adv = 1 + rng.below(20) as i64;
            let cid = adv * 100 + 1 + rng.below(10) as i64;
            let token = auth
                .mint(Role::Advertiser, Some(adv as u32), "bench", 600)
                .expect("token");
            let url = format!("{base}{}", path.replace("CID", &cid.to_string()));
            let t = Instant::now();
            let r = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("request");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            let body = r.bytes().await.expect("body");
            if i >= 20 {
                lat.push(t.elapsed());
            }
            assert!(body.len() > 100);
        }
        let (p50, p95, p99, max) = common::percentiles(&mut lat);
        println!(
            "{name:<28} {requests} requests: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            common::ms(p50),
            common::ms(p95),
            common::ms(p99),
            common::ms(max)
        );
    }
}

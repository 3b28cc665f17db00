//! Ingest rate into PostgreSQL: the writer alone (COPY into staging → insert ON CONFLICT DO
//! NOTHING → rollup deltas folded in memory → COPY + one upsert, one transaction per batch), for
//! several batch sizes, fresh events and a full replay (every event already stored). Also the
//! decode cost (rkyv check + row) per event on one core.
//!
//! `HELIOS_PG_URL=… cargo bench -p helios-reporter --bench ingest_pg` (BENCH_EVENTS to change the
//! run size, default 1,000,000; BENCH_BATCHES, comma-separated batch sizes, default
//! 10000,50000,100000).

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
    for batch in batches {
        println!(
            "batch {batch:>6}: load average {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        let db = common::BenchDb::create(&pg, "helios_bench_ingest").await;
        let mut c = reporter::db::connect(&db.url).await.expect("connect");
        reporter::db::migrate(&mut c).await.expect("migrate");
        drop(c);
        let mut w = Writer::new(
            &db.url,
            "bench",
            30,
            FaultDelay::default(),
            std::sync::Arc::new(reporter::ingest::stats::IngestStats::default()),
        );
        let backend = w.backend_pid().await.expect("pid");
        let (pg0, me0) = (
            cpu_secs(&format!("/proc/{backend}/stat")),
            cpu_secs("/proc/self/stat"),
        );
        let t = Instant::now();
        let mut inserted = 0;
        for chunk in rows.chunks(batch) {
            inserted += w.write(chunk, &Vec::new()).await.expect("write").inserted;
        }
        let fresh = t.elapsed();
        let (pg1, me1) = (
            cpu_secs(&format!("/proc/{backend}/stat")),
            cpu_secs("/proc/self/stat"),
        );
        let t = Instant::now();
        let mut dup = 0;
        for chunk in rows.chunks(batch) {
            dup += w.write(chunk, &Vec::new()).await.expect("write").duplicates;
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
            "batch {batch:>6}: CPU per fresh event: PostgreSQL backend {:.1} µs, this process {:.1} µs (1 PostgreSQL core ≈ {:.0} events/s)",
            per(pg1 - pg0),
            per(me1 - me0),
            rows.len() as f64 / (pg1 - pg0).max(1e-9),
        );
        println!(
            "batch {batch:>6}: fresh {:>8.0} events/s ({inserted} rows in {:.2} s), replay {:>8.0} events/s ({dup} duplicates), {rollup_rows} rollup rows",
            rows.len() as f64 / fresh.as_secs_f64(),
            fresh.as_secs_f64(),
            rows.len() as f64 / replay.as_secs_f64(),
        );
        drop(w);
        drop(check);
        db.drop_db().await;
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

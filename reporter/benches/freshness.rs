//! Through the real broker: (1) Kafka → PostgreSQL ingest rate of a reporter started on a topic
//! that already holds a run; (2) end-to-end freshness under a steady background load: a probe
//! event produced now → visible in the API (`/api/v1/campaigns/{id}` shows its impression, and
//! so does its per-site row in `/api/v1/top-sites?campaign_id=…`, a deferred rollup family that
//! may still be pending), p50/p99/max.
//!
//! `HELIOS_PG_URL=… HELIOS_KAFKA_BROKERS=… cargo bench -p helios-reporter --bench freshness`
//! (BENCH_EVENTS run size, default 300,000; BENCH_RATE background events/s, default 5,000;
//! BENCH_PROBES, default 100).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::event::{Event, EventKind, InlineStr};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use reporter::synth::{Expected, Rng, RunConfig, generate};

fn env_or(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, suffix: &str, e: &Event) {
    let topic = format!("{}{suffix}", e.kind.topic());
    let bytes = e.to_bytes();
    let mut key = itoa::Buffer::new();
    let k = e.key(&mut key).to_vec();
    let mut rec = BaseRecord::to(&topic).key(&k).payload(&bytes[..]);
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                p.poll(Duration::from_millis(5));
                rec = r;
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
    p.poll(Duration::ZERO);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(pg) = common::pg_url_or_skip("freshness") else {
        return;
    };
    let Ok(brokers) = std::env::var("HELIOS_KAFKA_BROKERS") else {
        println!("skipped: freshness: HELIOS_KAFKA_BROKERS not set");
        return;
    };
    let n = env_or("BENCH_EVENTS", 300_000);
    let rate = env_or("BENCH_RATE", 5_000);
    let probes = env_or("BENCH_PROBES", 100);
    let db = common::BenchDb::create(&pg, "helios_bench_fresh").await;
    let suffix = format!(".bench{}", std::process::id());
    let mut cfg = reporter::ingest::consumer::IngestConfig {
        brokers: brokers.clone(),
        group_id: format!("bench{}", std::process::id()),
        topics: vec![
            format!("helios.bids{suffix}"),
            format!("helios.outcomes{suffix}"),
        ],
        batch_max: 1,
        pg_writers: 1,
        batch_wait: Duration::from_millis(1),
        retention_days: 30,
        create_partitions: 4,
        fault_delay: Duration::ZERO,
        async_commit: false,
        prepare_ahead: true,
        copy_notices: true,
        defer_rollups: true,
        rollup_fold_every: Duration::from_secs(5),
        rollup_fold_rows: 250_000,
        kafka_options: Vec::new(),
    };
    reporter::ingest::consumer::ensure_topics(&cfg)
        .await
        .expect("topics");
    cfg.create_partitions = 0;

    // (1) A run already in the topics, then a reporter started on it.
    let span = 3600 * 1_000_000_000u64;
    let mut run = RunConfig::small(5, n * 10 / 19, now_ns() - span, span);
    run.advertisers = 20;
    run.campaigns_per_advertiser = 10;
    run.sites = 2000;
    let events = generate(&run);
    let expected = Expected::of(&events);
    let p = producer(&brokers);
    let t = Instant::now();
    for e in &events {
        send(&p, &suffix, e);
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    println!(
        "produced {} events in {:.1} s ({:.0}/s)",
        events.len(),
        t.elapsed().as_secs_f64(),
        events.len() as f64 / t.elapsed().as_secs_f64()
    );

    let secret = "bench-secret-bench-secret-bench-secret";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new(common::reporter_bin())
        .args([
            "--pg-url",
            &db.url,
            "--kafka-brokers",
            &brokers,
            "--group-id",
            &cfg.group_id,
        ])
        .args([
            "--topics",
            &cfg.topics.join(","),
            "--create-partitions",
            "0",
            "--log",
            "warn",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HELIOS_JWT_SECRET", secret)
        .stdout(Stdio::null())
        .spawn()
        .expect("start reporter");
    let pgc = loop {
        if let Ok(c) = reporter::db::connect(&db.url).await
            && c.query_one("SELECT count(*) FROM events", &[])
                .await
                .is_ok()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let count = || async {
        pgc.query_one("SELECT count(*) FROM events", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let c = count().await;
        if c > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if c >= expected.unique_events as i64 || started.elapsed() > Duration::from_secs(900) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = Instant::now();
    let f = first.unwrap_or(done);
    println!(
        "kafka → postgresql: {} distinct events ({} messages) in {:.1} s after the first batch ({:.0} events/s, {:.0} messages/s); group join {:.1} s",
        count().await,
        events.len(),
        (done - f).as_secs_f64(),
        expected.unique_events as f64 / (done - f).as_secs_f64().max(1e-3),
        events.len() as f64 / (done - f).as_secs_f64().max(1e-3),
        (f - started).as_secs_f64(),
    );

    // (2) Freshness under a steady background load.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let stop = stop.clone();
        let brokers = brokers.clone();
        let suffix = suffix.clone();
        std::thread::spawn(move || {
            let p = producer(&brokers);
            let mut seed = 100;
            let tick = Duration::from_millis(100);
            let per_tick = (rate / 10).max(1);
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t0 = now_ns();
                let mut c =
                    RunConfig::small(seed, per_tick * 10 / 19, t0 - 100_000_000, 100_000_000);
                c.advertisers = 20;
                c.campaigns_per_advertiser = 10;
                for e in generate(&c) {
                    send(&p, &suffix, &e);
                }
                seed += 1;
                next += tick;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            p.flush(Duration::from_secs(30)).expect("flush");
        })
    };
    let auth = reporter::api::auth::Auth::new(secret.as_bytes()).expect("auth");
    let token = auth
        .mint(reporter::api::auth::Role::Operator, None, "bench", 3600)
        .expect("token");
    let http = reqwest::Client::new();
    let p = producer(&brokers);
    let mut rng = Rng::new(77);
    let mut lat = Vec::new();
    for i in 0..probes {
        let cid = 990_000 + i as u32;
        let mut e = Event::new(EventKind::Billing);
        e.event_id = rng.id();
        e.advertiser_id = 99;
        e.campaign_id = cid;
        e.creative_id = 1;
        e.clear_price_micros = 1_000_000;
        e.country = *b"USA";
        e.site_or_app = InlineStr::new("probe.example");
        let t0 = Instant::now();
        e.ts_unix_ns = now_ns();
        e.bid_ts_unix_ns = e.ts_unix_ns;
        send(&p, &suffix, &e);
        p.flush(Duration::from_secs(10)).expect("flush");
        // Visible = the campaign's figures (campaign totals, written in the batch) and its
        // per-site figures (a deferred rollup family: pending until folded) both show it.
        let url = format!("http://127.0.0.1:{port}/api/v1/campaigns/{cid}");
        let sites = format!("http://127.0.0.1:{port}/api/v1/top-sites?campaign_id={cid}");
        let mut total_seen = false;
        loop {
            if !total_seen {
                let r = http.get(&url).bearer_auth(&token).send().await;
                if let Ok(r) = r
                    && r.status().is_success()
                    && let Ok(v) = r.json::<serde_json::Value>().await
                {
                    total_seen = v["campaign"]["figures"]["impressions"] == 1;
                }
            }
            if total_seen {
                let r = http.get(&sites).bearer_auth(&token).send().await;
                if let Ok(r) = r
                    && r.status().is_success()
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && v["items"][0]["site_or_app"] == "probe.example"
                    && v["items"][0]["figures"]["impressions"] == 1
                {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!("probe {i} not visible after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    bg.join().expect("background producer");
    let (p50, p95, p99, max) = common::percentiles(&mut lat);
    println!(
        "freshness (produce → visible in the API) with ~{rate} events/s background, {probes} probes: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        common::ms(p50),
        common::ms(p95),
        common::ms(p99),
        common::ms(max)
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(pgc);
    db.drop_db().await;
}

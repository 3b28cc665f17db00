//! Ingest rate into PostgreSQL: the writer alone (COPY into staging → raw insert → rollup deltas
//! folded in memory → COPY + one upsert, one transaction per batch or per part), side by side for
//! several writer variants, batch sizes and event-id layouts, fresh events then a full replay
//! (every event already stored). Also the decode cost (rkyv check + row) per event on one core.
//!
//! Variants (`BENCH_VARIANTS`, comma-separated `plan:connections`, default
//! `conflict:1,plain:1,plain:2`): `conflict` writes every row with `INSERT … ON CONFLICT DO
//! NOTHING` (session 2's writer), `plain` bids and no-bids with a plain insert and notices with
//! `ON CONFLICT`, `copy` bids and no-bids with a `COPY` straight into the raw table (see
//! `reporter::ingest::writer::InsertPlan`); `connections` parts written in parallel; further
//! fields: `no0005` drops both covering indexes of migration 0005 first, `nosites` only
//! `rollups_sites` (what they cost the ingest), `async` commits asynchronously, `foldK` defers
//! the fine-grained rollups (dim > 0) to `rollup_pending` and folds them on a connection of its
//! own every K batches and once at the end (its backend's CPU is counted with the writer's and
//! shown apart), `sites` re-creates `rollups_sites` (dropped by migration 0007; with it and
//! without `foldK` the schema and writer are main's before session 5), `nokey` drops the raw table's primary key first (what the key costs; repeated
//! notices are then stored twice, so that variant is not compared). Every other variant of one
//! (ids, batch) case must end with the same raw rows and rollup sums; the bench checks it.
//!
//! Ids (`BENCH_IDS`, default `random,realistic`): `random` as the generator makes them (16
//! random bytes for every event: the worst case for the primary-key index); `realistic` gives
//! bids and no-bids the appliance's layout (8-byte per-process prefix, core, 48-bit counter:
//! near-sequential per process) and keeps notices random (the pipeline derived them from a
//! SHA-256 of the notice until session 5); `timed` is `realistic` with notice ids as the
//! pipeline makes them since session 5: the bid time (8 bytes, big-endian nanoseconds), then 8
//! bytes of the hash — near-sequential in the raw key.
//!
//! Session 6 options: plan `copyall` ([`InsertPlan::CopyAll`]: notices too by `COPY` into the
//! raw table after a probe of their ids), `direct` (raw `COPY` into the day's partition),
//! `live` runs the folder *concurrently* as the reporter does (its own task
//! and connection, [`rollup_fold::run`] with the production schedule — every 5 s, sooner at
//! 250,000 appended deltas; BENCH_FOLD_MS / BENCH_FOLD_ROWS change it), and the wall time then
//! ends only once every pending delta is folded; `ahead` prepares each batch (sort, `COPY`
//! encoding, in-memory fold) on the blocking pool while the previous one is written, as the
//! reporter's writer task does. BENCH_SITES_ZIPF (comma-separated exponents, default `0`)
//! draws sites uniformly (`0`, every rollup key new: the worst case) or Zipf-distributed
//! (e.g. `1.1`: a few sites take most requests, as real traffic does); each is labelled.
//!
//! `HELIOS_PG_URL=… cargo bench -p helios-reporter --bench ingest_pg` (BENCH_EVENTS to change the
//! run size, default 1,000,000; BENCH_BATCHES, comma-separated batch sizes, default 50000;
//! BENCH_SPAN_S, the seconds of traffic the events are spread over, default 21600 — at 200,000
//! events/s a million events are 5 s of traffic, so rollup keys repeat across batches far more
//! than over 6 h; BENCH_REPLAY=0 skips the replay pass).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use codec::event::{Event, EventKind};
use reporter::ingest::prepare::Ahead;
use reporter::ingest::rollup_fold::{self, RollupFolder, Schedule};
use reporter::ingest::row::Row;
use reporter::ingest::stats::IngestStats;
use reporter::ingest::writer::{FaultDelay, InsertPlan, Offsets, Writer};
use reporter::synth::{RunConfig, generate};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(pg) = common::pg_url_or_skip("ingest_pg") else {
        return;
    };
    let target: u64 = env_or("BENCH_EVENTS", 1_000_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let span_s = env_or("BENCH_SPAN_S", 6 * 3600);
    let span = span_s * 1_000_000_000u64;
    let batches: Vec<usize> = list("BENCH_BATCHES", "50000")
        .iter()
        .filter_map(|b| b.parse().ok())
        .collect();
    let variants: Vec<Variant> = list("BENCH_VARIANTS", "conflict:1,plain:1,plain:2")
        .iter()
        .map(|v| Variant::parse(v))
        .collect();
    for zipf in list("BENCH_SITES_ZIPF", "0") {
        let zipf: f64 = zipf
            .parse()
            .expect("BENCH_SITES_ZIPF: exponents (0: uniform)");
        let stream = if zipf > 0.0 {
            format!("zipf{zipf}")
        } else {
            "uniform".to_owned()
        };
        // ~1.9 events per request with the default mix.
        let mut cfg = RunConfig::small(11, target * 10 / 19, now - span, span);
        cfg.advertisers = 20;
        cfg.campaigns_per_advertiser = 10;
        cfg.sites = 2000;
        cfg.site_zipf = zipf;
        let events = generate(&cfg);
        let bids = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Bid | EventKind::NoBid))
            .count();
        println!(
            "run: {} events ({} requests; {bids} bids and no-bids) over {span_s} s, 200 campaigns, \
             2000 sites ({stream})",
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

        for ids in list("BENCH_IDS", "random,realistic") {
            let rows = match ids.as_str() {
                "random" => rows.clone(),
                "realistic" => realistic_ids(&rows, false),
                "timed" => realistic_ids(&rows, true),
                other => panic!("BENCH_IDS: unknown id layout {other:?}"),
            };
            for &batch in &batches {
                let mut first: Option<(String, Totals)> = None;
                for v in &variants {
                    let totals = run_one(&pg, &rows, batch, &format!("{ids}/{stream}"), v).await;
                    if v.nokey {
                        continue;
                    }
                    match &first {
                        None => first = Some((v.label(), totals)),
                        Some((label, t)) => assert_eq!(
                            *t,
                            totals,
                            "{} stored other rows or rollups than {label}",
                            v.label()
                        ),
                    }
                }
            }
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

struct Variant {
    plan: InsertPlan,
    connections: usize,
    /// Indexes of migration 0005 dropped before the run (to measure what they cost the ingest).
    drop: Option<&'static str>,
    /// `synchronous_commit = off` for the batch transactions.
    async_commit: bool,
    /// Defer the fine-grained rollups and fold them every this many batches (0: not deferred).
    fold_every: usize,
    /// The raw table's primary key dropped first.
    nokey: bool,
    /// `rollups_sites` (migration 0005, dropped by 0007) re-created first: main's schema until
    /// session 5.
    sites: bool,
    /// The folder runs concurrently, as the reporter runs it: its own task and connection, the
    /// production schedule ([`rollup_fold::run`]); the wall time ends once it has folded
    /// every pending delta.
    live: bool,
    /// Batches prepared one ahead on the blocking pool while the previous one is written
    /// ([`Ahead`], as the reporter's writer task does since session 6).
    ahead: bool,
    /// Raw rows copied straight into the day's partition (no tuple routing).
    direct: bool,
}

impl Variant {
    fn parse(s: &str) -> Variant {
        let mut parts = s.split(':');
        let plan = parts.next().unwrap_or("plain");
        let n = parts.next().unwrap_or("1");
        let mut v = Variant {
            drop: None,
            async_commit: false,
            fold_every: 0,
            nokey: false,
            sites: false,
            live: false,
            ahead: false,
            direct: false,
            plan: match plan {
                "conflict" => InsertPlan::AllOnConflict,
                "plain" => InsertPlan::PlainBids,
                "copy" => InsertPlan::CopyBids,
                "copyall" => InsertPlan::CopyAll,
                other => panic!("BENCH_VARIANTS: unknown plan {other:?}"),
            },
            connections: n.parse().expect("BENCH_VARIANTS: connections"),
        };
        for opt in parts {
            match opt {
                "no0005" => v.drop = Some("rollups_minutes, rollups_sites"),
                "nosites" => v.drop = Some("rollups_sites"),
                "async" => v.async_commit = true,
                "nokey" => v.nokey = true,
                "sites" => v.sites = true,
                "live" => v.live = true,
                "ahead" => v.ahead = true,
                "direct" => v.direct = true,
                f if f.starts_with("fold") => {
                    v.fold_every = f[4..].parse().expect("BENCH_VARIANTS: foldK");
                    assert!(v.fold_every > 0, "BENCH_VARIANTS: foldK with K > 0");
                }
                other => panic!("BENCH_VARIANTS: unknown option {other:?}"),
            }
        }
        assert!(
            !(v.live && v.fold_every > 0),
            "BENCH_VARIANTS: `live` (concurrent folder) or `foldK` (between batches), not both"
        );
        v
    }
    fn label(&self) -> String {
        let plan = match self.plan {
            InsertPlan::AllOnConflict => "conflict",
            InsertPlan::PlainBids => "plain",
            InsertPlan::CopyBids => "copy",
            InsertPlan::CopyAll => "copyall",
        };
        let extra = match self.drop {
            None => "",
            Some(i) if i.contains(',') => ":no0005",
            Some(_) => ":nosites",
        };
        let commit = if self.async_commit { ":async" } else { "" };
        let fold = if self.fold_every > 0 {
            format!(":fold{}", self.fold_every)
        } else {
            String::new()
        };
        let key = if self.nokey { ":nokey" } else { "" };
        let sites = if self.sites { ":sites" } else { "" };
        let live = if self.live { ":live" } else { "" };
        let ahead = if self.ahead { ":ahead" } else { "" };
        let direct = if self.direct { ":direct" } else { "" };
        format!(
            "{plan}:{}{extra}{sites}{commit}{fold}{live}{ahead}{direct}{key}",
            self.connections
        )
    }
}

/// Bids and no-bids re-numbered as the appliance numbers them: per (node, core) an 8-byte
/// prefix, the core and a counter in the order the events were made; with `timed_notices`,
/// notices as the pipeline numbers them since session 5 (bid time, then 8 bytes of the hash —
/// here of the generator's random id, so a repeated notice keeps its id).
fn realistic_ids(rows: &[Row], timed_notices: bool) -> Vec<Row> {
    let mut counters: HashMap<(String, i32), u64> = HashMap::new();
    rows.iter()
        .cloned()
        .map(|mut r| {
            if r.is_kind(EventKind::Bid) || r.is_kind(EventKind::NoBid) {
                let n = counters.entry((r.node().to_owned(), r.core)).or_default();
                *n += 1;
                let prefix = r
                    .node()
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
                    })
                    .to_be_bytes();
                r.event_id[..8].copy_from_slice(&prefix);
                r.event_id[8..10].copy_from_slice(&(r.core as u16).to_be_bytes());
                r.event_id[10..].copy_from_slice(&n.to_be_bytes()[2..]);
            } else if timed_notices && let Some(bid_ts) = r.bid_ts {
                let ns = bid_ts
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                r.event_id[..8].copy_from_slice(&ns.to_be_bytes());
            }
            r
        })
        .collect()
}

/// What a run stored: raw rows, rollup rows and their sums (equal for every variant).
#[derive(Debug, PartialEq, Eq)]
struct Totals {
    events: i64,
    rollup_rows: i64,
    sums: Vec<i64>,
}

/// One (ids, batch size, variant): fresh events on a fresh database, then the same events again
/// (all duplicates).
async fn run_one(pg: &str, rows: &[Row], batch: usize, ids: &str, v: &Variant) -> Totals {
    let label = format!("ids {ids:<9} batch {batch:>6} {:<17}", v.label());
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    println!("{label}: load average {}", load());
    let db = common::BenchDb::create(pg, "helios_bench_ingest").await;
    let mut c = reporter::db::connect(&db.url).await.expect("connect");
    reporter::db::migrate(&mut c).await.expect("migrate");
    if let Some(indexes) = v.drop {
        c.batch_execute(&format!("DROP INDEX IF EXISTS {indexes}"))
            .await
            .expect("drop indexes of migration 0005");
    }
    if v.sites {
        c.batch_execute(
            "CREATE INDEX rollups_sites ON rollups_detail (advertiser_id, campaign_id, bucket)
             INCLUDE (val, bids, nobids, wins, losses, impressions, clicks, bid_cpm_micros,
                      spend_cpm_micros) WHERE gran = 2 AND dim = 2",
        )
        .await
        .expect("re-create rollups_sites");
    }
    if v.nokey {
        c.batch_execute("ALTER TABLE events DROP CONSTRAINT events_pkey")
            .await
            .expect("drop the raw key");
    }
    drop(c);
    let stats = std::sync::Arc::new(IngestStats::default());
    let mut w = Writer::new(&db.url, "bench", 30, FaultDelay::default(), stats.clone())
        .with_plan(v.plan)
        .with_async_commit(v.async_commit)
        .with_connections(v.connections)
        .with_deferred_rollups(v.fold_every > 0 || v.live)
        .with_direct_partition(v.direct);
    let mut folder = RollupFolder::new(&db.url);
    let folder_pid = folder.backend_pid().await.expect("folder pid");
    // The concurrent folder (`live`): the reporter's folder task, on a connection of its own.
    let (stop_live, stop_rx) = tokio::sync::watch::channel(false);
    let mut live = None;
    if v.live {
        let mut f = RollupFolder::new(&db.url);
        let pid = f.backend_pid().await.expect("live folder pid");
        let schedule = Schedule {
            every: Duration::from_millis(env_or("BENCH_FOLD_MS", 5000)),
            rows: env_or("BENCH_FOLD_ROWS", 250_000),
        };
        let task = tokio::spawn(rollup_fold::run(f, schedule, stats.clone(), stop_rx));
        live = Some((pid, task));
    }
    let live_pid = live.as_ref().map(|l| l.0);
    let backends = w.backend_pids().await.expect("backend pids");
    let pg_cpu = || -> f64 {
        backends
            .iter()
            .map(|p| cpu_secs(&format!("/proc/{p}/stat")))
            .sum()
    };
    let fold_cpu = || {
        cpu_secs(&format!("/proc/{folder_pid}/stat"))
            + live_pid.map_or(0.0, |p| cpu_secs(&format!("/proc/{p}/stat")))
    };
    // The batches as the consumer task hands them over (owned rows), made before the clock runs.
    let mut batches: std::collections::VecDeque<Vec<Row>> =
        rows.chunks(batch).map(|c| c.to_vec()).collect();
    let n_batches = batches.len();
    let (pg0, me0, f0) = (pg_cpu(), cpu_secs("/proc/self/stat"), fold_cpu());
    let t = Instant::now();
    let (mut inserted, mut fallbacks, mut staged) = (0, 0, 0);
    let (mut pending, mut folded, mut upserted) = (0, 0, 0);
    let mut ahead = Ahead::default();
    if v.ahead
        && let Some(b) = batches.pop_front()
    {
        ahead.start(b, Offsets::new(), w.prepare_cfg());
    }
    for i in 0..n_batches {
        let o = if v.ahead {
            let p = ahead.ready().await.expect("prepared");
            if let Some(b) = batches.pop_front() {
                ahead.start(b, Offsets::new(), w.prepare_cfg());
            }
            w.write_prepared(&p).await.expect("write")
        } else {
            let b = batches.pop_front().expect("a batch per turn");
            w.write(&b, &Vec::new()).await.expect("write")
        };
        inserted += o.inserted;
        fallbacks += o.fallbacks;
        staged += o.staged;
        pending += o.pending_rows;
        // As the consumer task does: the folder's schedule counts the appended deltas.
        stats.rollup_deferred.fetch_add(o.pending_rows, Relaxed);
        if v.fold_every > 0 && (i + 1) % v.fold_every == 0 {
            fold(&mut folder, &mut folded, &mut upserted).await;
        }
    }
    let written = t.elapsed();
    let mut live_folder = None;
    if let Some((_, task)) = live {
        // The folder task ends after the fold it may be running; the rest is folded now, inside
        // the timed run.
        stop_live.send(true).expect("live folder listening");
        // Kept (its backend alive) until its CPU time is read below.
        live_folder = Some(task.await.expect("live folder task"));
        folded += stats.rollup_folded.load(Relaxed);
    }
    if v.fold_every > 0 || v.live {
        fold(&mut folder, &mut folded, &mut upserted).await;
    }
    let fresh = t.elapsed();
    let (pg1, me1, f1) = (pg_cpu(), cpu_secs("/proc/self/stat"), fold_cpu());
    let t = Instant::now();
    let mut dup = 0;
    let replays = if env_or("BENCH_REPLAY", 1) == 0 {
        0
    } else {
        rows.len()
    };
    for chunk in rows[..replays].chunks(batch) {
        dup += w
            .write(chunk, &Vec::new())
            .await
            .expect("replay")
            .duplicates;
    }
    let replay = t.elapsed();
    if v.fold_every > 0 || v.live {
        fold(&mut folder, &mut folded, &mut upserted).await;
    }
    let pg2 = pg_cpu() + fold_cpu() - f1;
    let check = reporter::db::connect(&db.url).await.expect("connect");
    let r = check
        .query_one(
            "SELECT (SELECT count(*) FROM events), count(*), sum(bids)::bigint, \
             sum(nobids)::bigint, sum(wins)::bigint, sum(losses)::bigint, \
             sum(impressions)::bigint, sum(clicks)::bigint, sum(bid_cpm_micros)::bigint, \
             sum(spend_cpm_micros)::bigint, \
             (SELECT coalesce(sum(nobids), 0)::bigint FROM nobid_rollups) FROM rollups",
            &[],
        )
        .await
        .expect("totals");
    let totals = Totals {
        events: r.get(0),
        rollup_rows: r.get(1),
        sums: (2..11).map(|i| r.get::<_, i64>(i)).collect(),
    };
    let per = |cpu: f64| cpu * 1e6 / rows.len() as f64;
    let pg_all = (pg1 - pg0) + (f1 - f0);
    println!(
        "{label}: fresh {:>8.0} events/s wall, every delta folded ({inserted} rows in {:.2} s; \
         batches committed in {:.2} s: {:.0}/s; {fallbacks} fallbacks, {staged} rows staged); \
         CPU per event: PostgreSQL {:.2} µs (all backends; ⇒ {:.0} events/s per PostgreSQL core; \
         writer backends {:.2} µs, folder backend {:.2} µs), this process {:.2} µs; \
         {pending} deltas deferred, {folded} folded ({} live folds; {upserted} upserts by the \
         final/sequential folds)",
        rows.len() as f64 / fresh.as_secs_f64(),
        fresh.as_secs_f64(),
        written.as_secs_f64(),
        rows.len() as f64 / written.as_secs_f64(),
        per(pg_all),
        rows.len() as f64 / pg_all.max(1e-9),
        per(pg1 - pg0),
        per(f1 - f0),
        per(me1 - me0),
        stats.rollup_folds.load(Relaxed),
    );
    if replays == 0 {
        println!(
            "{label}: {} raw rows, {} rollup rows; load average {}",
            totals.events,
            totals.rollup_rows,
            load()
        );
    } else {
        println!(
            "{label}: replay {:>8.0} events/s wall ({dup} duplicates, PostgreSQL {:.2} µs/event); \
         {} raw rows, {} rollup rows; load average {}",
            rows.len() as f64 / replay.as_secs_f64(),
            per(pg2 - pg1),
            totals.events,
            totals.rollup_rows,
            load()
        );
    }
    drop(w);
    drop(folder);
    drop(live_folder);
    drop(check);
    db.drop_db().await;
    totals
}

/// Folds every pending delta: window sweeps until the table is seen empty (no writer runs
/// meanwhile).
async fn fold(folder: &mut RollupFolder, folded: &mut u64, upserted: &mut u64) {
    loop {
        let o = folder.fold().await.expect("fold");
        *folded += o.moved;
        *upserted += o.upserted;
        if !o.more && folder.pending_rows().await.expect("pending rows") == 0 {
            break;
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

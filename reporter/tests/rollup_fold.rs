//! Deferred rollups (issue 8, session 5) against the real database: the writer appends the
//! per-creative/site/country/device hour deltas to `rollup_pending` instead of upserting them,
//! and the folder moves them into `rollups`. The API (per-site series and top sites) must show
//! exact figures before any fold, after every batch while folds run concurrently (small folds of
//! two pages, so many interleave with the batches), and after the last fold; a replay adds nothing; every
//! family of the folded rollups then equals the run's totals; a fold waits its turn when another
//! reporter holds the fold lock and frees it after. Session 9's fold: its `MERGE` runs as a
//! nested loop of key probes on tables without statistics (and a real fold scans the detail
//! partition by key only); a batch upsert of one of its keys committed meanwhile makes it
//! fold with `ON CONFLICT` instead, exactly.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use codec::event::{Event, EventKind, flags};
use common::*;
use http_body_util::BodyExt;
use reporter::api::auth::{Auth, Role};
use reporter::api::{AppState, pool::Pool, router};
use reporter::ingest::fold::FAMILIES;
use reporter::ingest::rollup_fold::{FOLD_LOCK, MERGE, MERGE_PLAN, RollupFolder};
use reporter::ingest::row::Row;
use reporter::ingest::stats::IngestStats;
use reporter::ingest::writer::{FaultDelay, Writer};
use reporter::synth::{Expected, RunConfig, generate};
use serde_json::Value;
use tower::ServiceExt;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

async fn get(app: &axum::Router, path: &str, token: &str) -> Value {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("JSON body")
}

/// (impressions, bids) per site of advertiser `adv`, counting each event id once and leaving
/// test requests out — computed from the events, independently of the SQL.
fn per_site(events: &[Event], adv: u32) -> BTreeMap<String, (i64, i64)> {
    let mut seen = HashSet::new();
    let mut m: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in events {
        if !seen.insert(e.event_id) || e.flags & flags::TEST != 0 || e.advertiser_id != adv {
            continue;
        }
        let s = m.entry(e.site_or_app.as_str().to_owned()).or_default();
        match e.kind {
            EventKind::Billing => s.0 += 1,
            EventKind::Bid => s.1 += 1,
            _ => {}
        }
    }
    m.retain(|_, v| *v != (0, 0));
    m
}

/// What the API shows per site for advertiser `adv`: from `/stats?group_by=site` and from
/// `/top-sites` (both must agree).
async fn api_per_site(
    app: &axum::Router,
    token: &str,
    range: &str,
    adv: u32,
) -> BTreeMap<String, (i64, i64)> {
    let body = get(
        app,
        &format!("/api/v1/stats?{range}&group_by=site&limit=50&advertiser_id={adv}"),
        token,
    )
    .await;
    let from_stats: BTreeMap<String, (i64, i64)> = body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            let t = &s["totals"];
            (
                s["key"].as_str().unwrap_or("").to_owned(),
                (
                    t["impressions"].as_i64().unwrap_or(-1),
                    t["bids"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect();
    let body = get(
        app,
        &format!("/api/v1/top-sites?{range}&limit=100&advertiser_id={adv}"),
        token,
    )
    .await;
    let from_top: BTreeMap<String, (i64, i64)> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let f = &i["figures"];
            (
                i["site_or_app"].as_str().unwrap_or("").to_owned(),
                (
                    f["impressions"].as_i64().unwrap_or(-1),
                    f["bids"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect();
    assert_eq!(from_stats, from_top, "stats and top-sites agree");
    from_stats
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_rollups_are_exact_before_during_and_after_folds() {
    let Some((pg, _)) = services("rollup_fold", false) else {
        return;
    };
    let (tdb, mut c) = TestDb::migrated(&pg).await;

    // Two hours of traffic ending 10 minutes ago, 30 sites (fewer than the API's 50 series).
    let now = now_ns();
    let start = now - 7_800_000_000_000;
    let mut cfg = RunConfig::small(21, 8_000, start, 7_200_000_000_000);
    cfg.sites = 30;
    let events = generate(&cfg);
    let rows: Vec<Row> = events.iter().map(Row::from_event).collect();
    let half = rows.len() / 2;
    let mut w = Writer::new(
        &tdb.url,
        "fold-test",
        30,
        FaultDelay::default(),
        Arc::new(IngestStats::default()),
    )
    .with_deferred_rollups(true);

    let auth = Auth::new(SECRET).expect("auth");
    let tok = auth.mint(Role::Operator, None, "ops", 600).expect("token");
    let state = AppState {
        db: Arc::new(Pool::connect(&tdb.url, 2).await.expect("pool")),
        auth: Arc::new(auth),
        ingest: Arc::new(IngestStats::default()),
    };
    let app = router(state, None);
    let range = format!(
        "from={}&to={}",
        start / 1_000_000_000 - 3600,
        now / 1_000_000_000 + 3600
    );

    // First half, no folder: fine-grained deltas are pending only, and the API is exact.
    for chunk in rows[..half].chunks(1_000) {
        let o = w.write(chunk, &Vec::new()).await.expect("write");
        assert!(o.pending_rows > 0 && o.pending_rows < o.rollup_rows);
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM rollups WHERE dim <> 0").await,
        0,
        "no fine-grained row upserted in the batch"
    );
    assert!(count(&c, "SELECT count(*) FROM rollup_pending").await > 0);
    for adv in [1, 2] {
        assert_eq!(
            api_per_site(&app, &tok, &range, adv).await,
            per_site(&events[..half], adv),
            "advertiser {adv}, nothing folded yet"
        );
    }

    // Second half with small folds running concurrently: after every batch the API is exact.
    let stop = Arc::new(AtomicBool::new(false));
    let folder = {
        let (url, stop) = (tdb.url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut f = RollupFolder::new(&url).with_max_blocks(2);
            let (mut folds, mut moved) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let o = f.fold_once().await.expect("fold");
                folds += 1;
                moved += o.moved;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            (folds, moved)
        })
    };
    let mut done = half;
    for chunk in rows[half..].chunks(1_000) {
        w.write(chunk, &Vec::new()).await.expect("write");
        done += chunk.len();
        assert_eq!(
            api_per_site(&app, &tok, &range, 1).await,
            per_site(&events[..done], 1),
            "advertiser 1 after {done} rows, folds running"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (folds, moved) = folder.await.expect("folder task");
    assert!(folds > 1 && moved > 0, "{folds} folds moved {moved} deltas");

    // Last fold: nothing pending, and the folded rows alone hold every family exactly.
    let mut f = RollupFolder::new(&tdb.url);
    f.fold().await.expect("fold");
    assert_eq!(count(&c, "SELECT count(*) FROM rollup_pending").await, 0);
    assert_eq!(f.pending_rows().await.expect("pending rows"), 0);
    // The emptied table keeps its pages (until a vacuum truncates them): one-page window
    // sweeps over it end at the table's end instead of going round it forever.
    let pages = count(
        &c,
        "SELECT pg_relation_size('rollup_pending') / current_setting('block_size')::bigint",
    )
    .await;
    let mut g = RollupFolder::new(&tdb.url).with_max_blocks(1);
    let mut calls = 0;
    loop {
        let o = g.fold().await.expect("fold");
        assert_eq!(o.moved, 0, "nothing pending");
        calls += 1;
        if !o.more {
            break;
        }
        assert!(
            calls <= pages + 1,
            "window sweeps over {pages} pages never end"
        );
    }
    let expected = Expected::of(&events);
    check_families(&c, &expected).await;
    for adv in [1, 2] {
        assert_eq!(
            api_per_site(&app, &tok, &range, adv).await,
            per_site(&events, adv),
            "advertiser {adv}, all folded"
        );
    }

    // A replay of the whole run stores nothing and leaves nothing pending.
    for chunk in rows.chunks(1_000) {
        let o = w.write(chunk, &Vec::new()).await.expect("replay");
        assert_eq!((o.inserted, o.pending_rows), (0, 0));
    }
    assert_eq!(count(&c, "SELECT count(*) FROM rollup_pending").await, 0);
    check_families(&c, &expected).await;

    // One fold at a time over every reporter: a fold finds the lock taken and skips its turn.
    let tx = c.transaction().await.expect("tx");
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .expect("lock");
    assert!(f.fold_once().await.expect("fold").skipped);
    tx.rollback().await.expect("rollback");
    assert!(!f.fold_once().await.expect("fold").skipped);
    // The folder's session lock is released after each fold (another reporter's turn can come).
    let tx = c.transaction().await.expect("tx");
    let free: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .expect("try lock")
        .get(0);
    tx.rollback().await.expect("rollback");
    assert!(free, "the fold lock is free again after a fold");

    drop(app);
    drop(c);
    tdb.drop_db().await;
}

/// Every kept (granularity, dimension) family of the folded rollups adds up to the expected
/// campaign totals.
async fn check_families(db: &tokio_postgres::Client, expected: &Expected) {
    for &(gran, dim) in FAMILIES {
        let rows = db
            .query(
                "SELECT campaign_id, sum(bids)::bigint, sum(wins)::bigint, sum(losses)::bigint,
                        sum(impressions)::bigint, sum(clicks)::bigint,
                        sum(bid_cpm_micros)::bigint, sum(spend_cpm_micros)::bigint
                 FROM rollups WHERE gran = $1 AND dim = $2 GROUP BY 1 ORDER BY 1",
                &[&gran, &dim],
            )
            .await
            .expect("rollups");
        let got: Vec<(i64, [i64; 7])> = rows
            .iter()
            .map(|r| (r.get(0), std::array::from_fn(|i| r.get::<_, i64>(i + 1))))
            .collect();
        let want: Vec<(i64, [i64; 7])> = expected
            .campaigns
            .iter()
            .map(|(id, t)| (*id as i64, t.figures()))
            .collect();
        assert_eq!(got, want, "gran {gran} dim {dim}");
    }
}

/// Migration 0009: the rows the folder updates (dim > 0) live in a partition whose only index
/// is the primary key, so updating their counters can be HOT (in place, no new index entry).
/// PostgreSQL 15 makes an update non-HOT when it changes any column an index of the table
/// mentions (INCLUDE and predicate columns too, whatever the index's WHERE): the covering
/// indexes of migrations 0004/0005, on the whole table until then, had made every fold update
/// non-HOT. Fails if an index over the detail rows names a counter, or if an update of one is
/// not HOT on a page with room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_rows_are_updated_in_place() {
    let Some((pg, _)) = services("rollup_fold", false) else {
        return;
    };
    let (tdb, mut c) = TestDb::migrated(&pg).await;
    let key = [
        "gran",
        "advertiser_id",
        "campaign_id",
        "dim",
        "bucket",
        "val",
    ];
    let indexed = c
        .query(
            "SELECT i.indexrelid::regclass::text, a.attname::text,
                    i.indexprs IS NULL AND i.indpred IS NULL
             FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = 'rollups_detail'::regclass",
            &[],
        )
        .await
        .expect("indexes of rollups_detail");
    assert!(!indexed.is_empty(), "rollups_detail has its primary key");
    for r in &indexed {
        let (index, column, plain): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
        assert!(
            key.contains(&column.as_str()) && plain,
            "{index} mentions {column} (or has an expression or predicate): detail rows would \
             no longer be HOT-updated"
        );
    }
    // The fold's own statement: one key merged three times (an insert, then two updates).
    let tx = c.transaction().await.expect("begin");
    tx.batch_execute(
        "CREATE TEMP TABLE fold_src (LIKE rollups) ON COMMIT DROP;
         INSERT INTO fold_src VALUES (2, 7, 70, 2, '2026-11-27 06:00+00', 'site-1.example',
                                      1, 0, 0, 0, 0, 0, 1000, 0, 0, now())",
    )
    .await
    .expect("a sum to merge");
    for _ in 0..3 {
        tx.batch_execute(MERGE_PLAN).await.expect("plan settings");
        assert_eq!(tx.execute(MERGE, &[]).await.expect("merge a site row"), 1);
    }
    // The current transaction's own counters: no wait for the statistics collector.
    let hot: i64 = tx
        .query_one(
            "SELECT pg_stat_get_xact_tuples_hot_updated('rollups_detail'::regclass)",
            &[],
        )
        .await
        .expect("hot updates")
        .get(0);
    let bids: i64 = tx
        .query_one("SELECT bids FROM rollups WHERE dim = 2", &[])
        .await
        .expect("the row")
        .get(0);
    tx.rollback().await.expect("rollback");
    drop(c);
    tdb.drop_db().await;
    assert_eq!(bids, 3, "one insert and two updates of one key");
    assert_eq!(hot, 2, "both updates of the site row were HOT");
}

/// The fold's `MERGE` probes the detail rollups' primary key once per sum, whatever the
/// planner knows: here it knows nothing (neither the detail rows nor the sums were ever
/// analyzed), and unpinned it joins by reading the whole partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fold_merge_probes_the_key_on_tables_without_statistics() {
    let Some((pg, _)) = services("rollup_fold", false) else {
        return;
    };
    let (tdb, mut c) = TestDb::migrated(&pg).await;
    c.batch_execute(
        "ALTER TABLE rollups_detail SET (autovacuum_enabled = false);
         INSERT INTO rollups_detail
         SELECT 2, i % 50, i % 200, 2, '2026-11-27 06:00+00', 'site-' || i,
                1, 0, 0, 0, 0, 0, 1000, 0, 0, now()
         FROM generate_series(1, 200000) i;
         CREATE TEMP TABLE fold_src (LIKE rollups);
         INSERT INTO fold_src
         SELECT 2, i % 50, i % 200, 2, '2026-11-27 06:00+00', 'site-' || (i * 3),
                1, 0, 0, 0, 0, 0, 1000, 0, 0, now()
         FROM generate_series(1, 100000) i;",
    )
    .await
    .expect("detail rows and sums");
    // Deltas for the fold below: half of them for keys already folded, half new.
    c.batch_execute(
        "INSERT INTO rollup_pending
         SELECT 2, i % 50, i % 200, 2, '2026-11-27 06:00+00', 'site-' || i,
                1, 0, 0, 0, 0, 0, 1000, 0, 0, now()
         FROM generate_series(190001, 210000) i;",
    )
    .await
    .expect("pending deltas");
    let explain = format!("EXPLAIN (COSTS OFF) {MERGE}");
    let lines = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let free = lines(c.query(&explain, &[]).await.expect("explain unpinned"));
    let tx = c.transaction().await.expect("begin");
    tx.batch_execute(MERGE_PLAN).await.expect("plan settings");
    let pinned = lines(tx.query(&explain, &[]).await.expect("explain pinned"));
    tx.rollback().await.expect("rollback");

    // And the folder does run under the pin: a real fold reads the partition by its key only
    // (the folder's backend reports its scan counts when its connection closes).
    let scans =
        "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'rollups_detail'";
    // This connection's own counts first (the migrations' index builds scanned the partition,
    // counted as a sequential scan; a backend sends its counts at most once a second, so they
    // could arrive between the two readings below and look like the fold's).
    c.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush this backend's statistics");
    let before: (i64, i64) = {
        c.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .expect("fresh statistics");
        let r = c.query_one(scans, &[]).await.expect("scans before");
        (r.get(0), r.get(1))
    };
    let mut f = RollupFolder::new(&tdb.url);
    let o = f.fold().await.expect("fold");
    assert_eq!((o.moved, o.upserted, o.contended), (20_000, 20_000, false));
    drop(f);
    let mut after = before;
    for _ in 0..100 {
        c.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .expect("fresh statistics");
        let r = c.query_one(scans, &[]).await.expect("scans after");
        after = (r.get(0), r.get(1));
        if after.1 > before.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let folded: i64 = c
        .query_one("SELECT count(*) FROM rollups_detail WHERE bids = 2", &[])
        .await
        .expect("folded rows")
        .get(0);
    drop(c);
    tdb.drop_db().await;
    assert_eq!(folded, 10_000, "the keys already there were added to");
    assert_eq!(
        after.0, before.0,
        "the fold scanned the whole detail partition"
    );
    assert!(
        after.1 >= before.1 + 20_000,
        "the fold probed the key fewer times than it merged sums: {before:?} → {after:?}"
    );
    assert!(
        free.contains("Seq Scan on rollups_detail"),
        "unpinned, the planner was expected to read the whole partition (the case the pin \
         exists for):\n{free}"
    );
    assert!(
        pinned.contains("Nested Loop")
            && pinned.contains("Index Scan using rollups_detail_pkey")
            && !pinned.contains("Seq Scan on rollups_detail"),
        "the fold's merge is not a nested loop of key probes:\n{pinned}"
    );
}

/// A reporter run with `--defer-rollups=false` upserts dim ≠ 0 rows in its batches: when it
/// commits a key after the fold's snapshot, the fold's `MERGE` fails on it, and the same deltas
/// are folded at once with `ON CONFLICT` instead (which waits for such a writer): nothing is
/// lost or counted twice, and the fold does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_beside_a_batch_upsert_of_its_key_folds_with_on_conflict() {
    let Some((pg, _)) = services("rollup_fold", false) else {
        return;
    };
    let (tdb, mut c) = TestDb::migrated(&pg).await;
    let key = "2, 7, 70, 2, '2026-11-27 06:00+00'::timestamptz, 'site-1.example'";
    c.batch_execute(&format!(
        "INSERT INTO rollup_pending VALUES ({key}, 1, 0, 0, 0, 0, 0, 1000, 0, 0, now()),
                                           ({key}, 2, 0, 0, 0, 0, 0, 2000, 0, 0, now())"
    ))
    .await
    .expect("pending deltas");
    // The batch writer's upsert of the same (new) key, not committed yet: the fold's insert
    // of that key waits on it.
    let tx = c.transaction().await.expect("begin");
    tx.batch_execute(&format!(
        "INSERT INTO rollups VALUES ({key}, 10, 0, 0, 0, 0, 0, 10000, 0, 0, now())"
    ))
    .await
    .expect("a batch's upsert");
    let url = tdb.url.clone();
    let fold = tokio::spawn(async move {
        let mut f = RollupFolder::new(&url);
        f.fold_once().await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tx.commit().await.expect("commit the batch");
    let o = fold.await.expect("fold task").expect("the fold succeeds");
    let row = c
        .query_one(
            "SELECT bids, bid_cpm_micros,
                    (SELECT count(*) FROM rollup_pending)
             FROM rollups WHERE dim = 2",
            &[],
        )
        .await
        .expect("the key's row");
    let (bids, cpm, pending): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    drop(c);
    tdb.drop_db().await;
    assert!(o.contended, "the fold's MERGE met the batch's key: {o:?}");
    assert_eq!((o.moved, o.upserted), (2, 1));
    assert_eq!(
        (bids, cpm, pending),
        (13, 13_000, 0),
        "batch + both deltas, once"
    );
}

//! The writer against the real PostgreSQL: bids and no-bids by plain insert (session 3) or by
//! `COPY` straight into the raw table (the default), with the `ON CONFLICT` fallback, batches
//! split over several connections, synchronous or asynchronous commit — each case must store
//! every distinct event once and add it once to the rollups, whatever was stored before.

mod common;

use std::sync::Arc;

use codec::event::{Event, EventKind};
use common::*;
use reporter::ingest::row::Row;
use reporter::ingest::stats::IngestStats;
use reporter::ingest::writer::{FaultDelay, InsertPlan, Writer, probe_plan, probe_stored, route};
use reporter::synth::{Expected, RunConfig, generate};
use tokio_postgres::Client;

fn writer(url: &str, connections: usize, plan: InsertPlan) -> Writer {
    Writer::new(
        url,
        "writer-test",
        30,
        FaultDelay::default(),
        Arc::new(IngestStats::default()),
    )
    .with_plan(plan)
    .with_connections(connections)
}

/// Raw rows; per campaign (id, bids, wins, impressions, spend) of the day rollups; no-bids.
type Stored = (i64, Vec<(i64, i64, i64, i64, i64)>, i64);

async fn stored(db: &Client) -> Stored {
    let events: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    let per_campaign = db
        .query(
            "SELECT campaign_id, sum(bids)::bigint, sum(wins)::bigint, sum(impressions)::bigint,
                    sum(spend_cpm_micros)::bigint
             FROM rollups WHERE gran = 3 AND dim = 0 GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("rollups")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let nobids: i64 = db
        .query_one(
            "SELECT coalesce(sum(nobids), 0)::bigint FROM nobid_rollups WHERE gran = 3",
            &[],
        )
        .await
        .expect("nobids")
        .get(0);
    (events, per_campaign, nobids)
}

/// A generated run of `requests` over the last hour, and what it must leave stored.
fn last_hour(seed: u64, requests: u64) -> (Vec<Event>, Stored) {
    let cfg = RunConfig::small(
        seed,
        requests,
        now_ns() - 3_600_000_000_000,
        3_600_000_000_000,
    );
    let events = generate(&cfg);
    let want = expected(&Expected::of(&events));
    (events, want)
}

fn expected(x: &Expected) -> Stored {
    (
        x.unique_events as i64,
        x.campaigns
            .iter()
            .map(|(id, c)| {
                (
                    *id as i64,
                    c.bids,
                    c.wins,
                    c.impressions,
                    c.spend_cpm_micros,
                )
            })
            .collect(),
        x.nobids.values().sum(),
    )
}

#[test]
fn route_is_by_campaign_then_exchange_and_within_bounds() {
    let mut e = codec::event::Event::new(EventKind::Billing);
    e.campaign_id = 7;
    let a = Row::from_event(&e);
    e.kind = EventKind::Bid;
    e.exchange = codec::event::InlineStr::new("other");
    let b = Row::from_event(&e);
    for n in 1..=8 {
        assert_eq!(route(&a, n), route(&b, n), "one campaign, one part");
        assert!(route(&a, n) < n);
    }
    assert_eq!(route(&a, 1), 0);
    // Campaigns spread over the parts.
    let parts: std::collections::HashSet<usize> = (1..200u32)
        .map(|c| {
            e.campaign_id = c;
            route(&Row::from_event(&e), 4)
        })
        .collect();
    assert_eq!(parts.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_inserts_fall_back_on_replays_and_parts_store_each_event_once() {
    falls_back_on_replays_and_stores_each_event_once(InsertPlan::PlainBids, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_bids_fall_back_on_replays_and_parts_store_each_event_once_async_commit() {
    falls_back_on_replays_and_stores_each_event_once(InsertPlan::CopyBids, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_notices_fall_back_on_replays_and_parts_store_each_event_once_async_commit() {
    falls_back_on_replays_and_stores_each_event_once(InsertPlan::CopyAll, true).await;
}

/// `CopyAll`: a notice of an earlier batch repeated by the exchange is found by the probe and
/// left out (no failed `COPY`, no fallback, not folded); the batch's other notices still go
/// straight in by `COPY`, none through staging and `ON CONFLICT` (until session 10 the one
/// repeat sent them all that way); everything else is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_notices_skip_a_notice_stored_by_an_earlier_batch() {
    let Some((pg, _)) = services("writer_parts", false) else {
        return;
    };
    let (tdb, c) = TestDb::migrated(&pg).await;
    let (events, want) = last_hour(9, 2_000);
    let rows: Vec<Row> = events.iter().map(Row::from_event).collect();
    let half = rows.len() / 2;
    let k = rows[..half]
        .iter()
        .position(|r| r.is_kind(EventKind::Billing) && r.flags == 0)
        .expect("a billing notice in the first half");
    let mut w = writer(&tdb.url, 1, InsertPlan::CopyAll);
    let a = w
        .write(&rows[..half], &Vec::new())
        .await
        .expect("first half");
    assert_eq!(a.fallbacks, 0);
    let mut second = rows[half..].to_vec();
    second.push(rows[k].clone());
    let b = w.write(&second, &Vec::new()).await.expect("second half");
    assert_eq!(b.fallbacks, 0, "the probe found the repeat: no failed COPY");
    assert!(b.duplicates >= 1, "{b:?}");
    assert_eq!(b.inserted + b.duplicates, second.len() as u64, "{b:?}");
    assert_eq!(b.staged, 0, "no notice staged for one repeat: {b:?}");
    assert_eq!(
        stored(&c).await,
        want,
        "every event once, the repeat not folded"
    );
    // The whole run again (a replay): nothing inserted, still exact.
    let o = w.write(&rows, &Vec::new()).await.expect("replay");
    assert_eq!(o.inserted, 0);
    assert_eq!(stored(&c).await, want);
    drop(w);
    drop(c);
    tdb.drop_db().await;
}

/// `CopyAll` with notices on two days in one part, some of each day stored by an earlier
/// batch: the probe runs per day and answers exactly the stored ones, which are left out; then
/// a batch of nothing but stored notices (nothing to `COPY`): nothing inserted, nothing
/// staged, no fallback, and the rows and rollups stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_notices_on_two_days_leave_out_only_the_stored_ones() {
    let Some((pg, _)) = services("writer_parts", false) else {
        return;
    };
    let (tdb, c) = TestDb::migrated(&pg).await;
    let (events, want) = last_hour(21, 2_000);
    let is_notice = |r: &Row| !(r.is_kind(EventKind::Bid) || r.is_kind(EventKind::NoBid));
    // Half of the notices a day earlier, chosen by id, so that an exchange's repeat (same id)
    // falls on the same day as the first copy; the rollups go by event time, not by `day`.
    let rows: Vec<Row> = events
        .iter()
        .map(Row::from_event)
        .map(|mut r| {
            if is_notice(&r) && r.event_id[15] % 2 == 0 {
                r.day -= 1;
            }
            r
        })
        .collect();
    let half = rows.len() / 2;
    let today = rows[0].day;
    let first_notices: Vec<Row> = rows[..half]
        .iter()
        .filter(|r| is_notice(r))
        .cloned()
        .collect();
    assert!(
        first_notices.iter().any(|r| r.day == today)
            && first_notices.iter().any(|r| r.day == today - 1),
        "notices of the first half on both days"
    );
    let mut w = writer(&tdb.url, 1, InsertPlan::CopyAll);
    let a = w
        .write(&rows[..half], &Vec::new())
        .await
        .expect("first half");
    assert_eq!((a.fallbacks, a.staged), (0, 0), "{a:?}");
    // The second half with one stored notice of each day repeated in it.
    let mut second = rows[half..].to_vec();
    for d in [today, today - 1] {
        let r = first_notices
            .iter()
            .find(|r| r.day == d)
            .expect("a notice of the day");
        second.push(r.clone());
    }
    let b = w.write(&second, &Vec::new()).await.expect("second half");
    assert_eq!((b.fallbacks, b.staged, b.out_of_range), (0, 0, 0), "{b:?}");
    assert_eq!(b.inserted + b.duplicates, second.len() as u64, "{b:?}");
    assert!(b.duplicates >= 2, "both repeats found: {b:?}");
    assert_eq!(
        stored(&c).await,
        want,
        "every event once, the repeats not folded"
    );
    // Nothing but stored notices.
    let o = w
        .write(&first_notices, &Vec::new())
        .await
        .expect("stored notices");
    assert_eq!((o.inserted, o.fallbacks, o.staged), (0, 0, 0), "{o:?}");
    assert_eq!(stored(&c).await, want, "nothing added");
    let days: i64 = c
        .query_one("SELECT count(DISTINCT day) FROM events", &[])
        .await
        .expect("days")
        .get(0);
    assert_eq!(days, 2);
    drop(w);
    drop(c);
    tdb.drop_db().await;
}

async fn falls_back_on_replays_and_stores_each_event_once(plan: InsertPlan, async_commit: bool) {
    let Some((pg, _)) = services("writer_parts", false) else {
        return;
    };
    let (tdb, c) = TestDb::migrated(&pg).await;

    let (events, want) = last_hour(5, 6_000);
    let rows: Vec<Row> = events.iter().map(Row::from_event).collect();
    assert!(
        rows.iter()
            .any(|r| r.is_kind(EventKind::Bid) || r.is_kind(EventKind::NoBid))
            && rows.iter().any(|r| r.is_kind(EventKind::Billing)),
        "the run has bids and notices"
    );

    // 1. The first half on one connection: no fallback (nothing stored yet; exchange-repeated
    //    notices are skipped by ON CONFLICT or, with CopyAll, left out after the probe).
    //    Committed asynchronously, each batch answers the WAL position its commit needs on
    //    disk, which the server reaches soon after.
    let half = rows.len() / 2;
    let mut one = writer(&tdb.url, 1, plan).with_async_commit(async_commit);
    let mut fallbacks = 0;
    let mut last_commit = None;
    for chunk in rows[..half].chunks(1_000) {
        let o = one
            .write(chunk, &vec![("t".to_owned(), 0, 1)])
            .await
            .expect("write");
        fallbacks += o.fallbacks;
        assert_eq!(o.commit_lsn.is_some(), async_commit, "{o:?}");
        last_commit = o.commit_lsn.or(last_commit);
    }
    assert_eq!(fallbacks, 0, "fresh bids need no fallback");
    if let Some((lsn, started)) = last_commit {
        // A synchronous commit of the writer's own flushes the WAL past every earlier commit
        // (what the ingest does when a batch has waited too long).
        one.force_flush(&vec![("t".to_owned(), 0, 1)])
            .await
            .expect("force a flush");
        let (flushed, now_started) = one.flushed_position().await.expect("flush position");
        assert_eq!(now_started, started, "same server");
        assert!(
            flushed >= lsn,
            "the last commit is on disk: {flushed} < {lsn}"
        );
    }

    // 2. Everything, on three connections in 1,500-event batches: the first half comes again
    //    (a replay: plain inserts meet stored ids and fall back), the rest is new.
    let mut three = writer(&tdb.url, 3, plan).with_async_commit(async_commit);
    assert_eq!(three.connections(), 3);
    let (mut inserted, mut duplicates, mut fallbacks) = (0, 0, 0);
    for chunk in rows.chunks(1_500) {
        let o = three
            .write(chunk, &vec![("t".to_owned(), 0, 1)])
            .await
            .expect("write");
        // Several parts: the synchronous offsets statement flushes every part with it.
        assert_eq!(o.commit_lsn, None);
        inserted += o.inserted;
        duplicates += o.duplicates;
        fallbacks += o.fallbacks;
    }
    assert!(fallbacks > 0, "the replayed half fell back to ON CONFLICT");
    assert_eq!(stored(&c).await, want, "every event once, rollups exact");
    assert_eq!(duplicates + inserted, rows.len() as u64);

    // 3. The whole run again, every variant: nothing inserted, nothing added.
    for (n, plan) in [
        (1, InsertPlan::PlainBids),
        (2, InsertPlan::PlainBids),
        (1, InsertPlan::CopyBids),
        (2, InsertPlan::CopyBids),
        (1, InsertPlan::CopyAll),
        (2, InsertPlan::CopyAll),
        (1, InsertPlan::AllOnConflict),
    ] {
        let mut w = writer(&tdb.url, n, plan);
        let o = w.write(&rows, &Vec::new()).await.expect("replay");
        assert_eq!(o.inserted, 0, "{n} connections, {plan:?}");
        assert_eq!(stored(&c).await, want, "{n} connections, {plan:?}");
    }

    // Offsets recorded once every part committed.
    let next: i64 = c
        .query_one(
            "SELECT next_offset FROM ingest_offsets WHERE group_id = 'writer-test'",
            &[],
        )
        .await
        .expect("offsets")
        .get(0);
    assert_eq!(next, 1);

    drop(one);
    drop(three);
    drop(c);
    tdb.drop_db().await;
}

/// The notice probe ([`probe_stored`], the writer's own) is one index probe per id even where
/// the planner knows nothing of the day's partition: a fresh one that autovacuum has not
/// analyzed yet (here: never, autovacuum off on it) while it holds 300,000 rows; and it leaves
/// the planner's settings as it found them. Planned for 100, 3,000 and 25,000 ids (a batch's
/// notices are a few thousand per part). Session 8 saw the probe, with a `LIMIT 1` and no plan
/// settings, run for minutes once such a partition held millions of rows; session 10 saw the
/// join of sessions 6–9 planned, for 3,000 ids with random bytes, as one read of the whole
/// partition compared with every id (`Materialize`, `Join Filter`: 58 s in `psql`). A plan
/// that reads the whole partition, or sorts or hashes it, or probes anything but the key with
/// each id, fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notice_probe_is_index_probes_on_a_partition_without_statistics() {
    let Some((pg, _)) = services("writer_parts", false) else {
        return;
    };
    let (tdb, mut c) = TestDb::migrated(&pg).await;
    c.batch_execute(
        "CREATE TABLE events_probe_test PARTITION OF events FOR VALUES FROM (1) TO (2)
             WITH (autovacuum_enabled = off);
         INSERT INTO events_probe_test
         SELECT 1, decode(md5(i::text), 'hex'), 3, 0, 0, 0, now(), now(),
                '\\x00', 'n', 'x', 'r', 'i', 1, 1, 1, 0, 0, 'USD', 'US', 2, 's'
         FROM generate_series(1, 300000) i",
    )
    .await
    .expect("a partition without statistics");
    // Its ids are random bytes, as the stored notices' hash part is: the key's leaf pages are
    // then as full as a live partition's (sequential ids pack them, which makes each probe
    // cheaper on paper and hid the failure).
    let stored: Vec<u8> = c
        .query_one("SELECT decode(md5('7'), 'hex')", &[])
        .await
        .expect("a stored id")
        .get(0);
    // Up to 25,000 ids, none stored, random bytes as notice ids' hash part is: what the notices
    // of a 50,000-event batch (or of one part of it) look like to the probe.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<Vec<u8>> = (0..25_000)
        .map(|_| {
            let mut id = vec![0xee; 16];
            for b in id[4..].iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            id
        })
        .collect();
    let ids: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let tx = c.transaction().await.expect("begin");
    let mut plans = Vec::new();
    for n in [100, 3_000, 25_000] {
        let plan = probe_plan(&tx, 1, &ids[..n]).await.expect("explain");
        plans.push((n, plan.join("\n")));
    }
    let found = probe_stored(&tx, 1, &ids).await.expect("probe");
    let stored_one = probe_stored(&tx, 1, &[&stored])
        .await
        .expect("probe a stored id");
    let seqscan: String = tx
        .query_one("SHOW enable_seqscan", &[])
        .await
        .expect("show")
        .get(0);
    let rows: i64 = tx
        .query_one("SELECT count(*) FROM events_probe_test", &[])
        .await
        .expect("rows")
        .get(0);
    tx.rollback().await.expect("rollback");
    drop(c);
    tdb.drop_db().await;
    assert_eq!(
        rows, 300_000,
        "the partition holds the rows the probe is planned against"
    );
    assert_eq!(found, 0, "none of the ids is stored");
    assert_eq!(stored_one, 1, "a stored id is found");
    assert_eq!(seqscan, "on", "the probe's settings end with it");
    for (n, plan) in &plans {
        for refused in [
            "Seq Scan",
            "Bitmap",
            "Merge Join",
            "Hash Join",
            "Sort",
            "Gather",
            "Materialize",
            "Join Filter",
        ] {
            assert!(
                !plan.contains(refused),
                "{n} ids: {refused} in the probe's plan:\n{plan}"
            );
        }
    }
    for (n, plan) in &plans {
        assert!(
            plan.contains("SubPlan")
                && plan.contains("Index Only Scan using events_probe_test")
                && plan.lines().any(|l| l.contains("Index Cond:")
                    && l.contains("day = ")
                    && l.contains("event_id = u.id")),
            "{n} ids: index probes of the partition's key, one per id:\n{plan}"
        );
    }
}

//! Exactly once through crashes, against the real broker and database: events (with
//! exchange-repeated notices, test requests and garbage messages) are produced with rdkafka; the
//! reporter is SIGKILLed twice mid-batch — once after a batch's PostgreSQL commit but before its
//! Kafka offset commit (so the batch is redelivered), once inside a batch's open transaction —
//! and restarted; then raw rows and every rollup family must equal what the run should count, exactly.

mod common;

use std::time::{Duration, Instant};

use common::ingest::IngestRun;
use common::*;
use reporter::ingest::fold::FAMILIES;
use reporter::synth::Expected;
use tokio_postgres::Client;

/// How long a restarted reporter may take to join the group and open a batch: the session
/// timeout (6 s) plus the rebalance bound (15 s) plus the held batch, three times over for a
/// loaded machine (the run prints what it took).
const REJOIN_BOUND: Duration = Duration::from_secs(90);

async fn count(db: &Client) -> i64 {
    db.query_one("SELECT count(*) FROM events", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_neither_loses_nor_double_counts() {
    let Some((pg, Some(brokers))) = services("sigkill_mid_batch", true) else {
        return;
    };
    // 10 minutes of traffic ending now.
    let ingest = IngestRun::produce(&pg, &brokers, "t", 42, 5).await;
    let (tdb, expected) = (&ingest.tdb, &ingest.expected);
    let args = |fault: &str| ingest.reporter_args("ingest", "1500", fault);

    // Migrations are applied by the reporter; wait for the table.
    let mut r = Reporter::start(&args("1500"));
    let db = wait_for(Duration::from_secs(30), || async {
        let c = tdb.client().await;
        (count(&c).await >= 0).then_some(c)
    })
    .await
    .expect("reporter created the schema");

    // 1. Kill right after a batch committed in PostgreSQL: its Kafka offsets are not committed
    //    yet (the fault delay holds them back), so the restarted reporter reads it again.
    let first = wait_for(Duration::from_secs(60), || async {
        let n = count(&db).await;
        (n > 0).then_some(n)
    })
    .await
    .expect("a first batch committed");
    r.kill9();
    println!("killed after commit with {first} rows");

    // 2. Restart; kill while a batch's transaction is open (idle in transaction in the delay).
    //    The restarted consumer first has to join the group, in which the killed one is still a
    //    member until its session (6 s) runs out on the broker; Tansu holds a JoinGroup up to the
    //    rebalance bound (max.poll.interval.ms, 15 s) for members that do not rejoin. Then a
    //    batch is read and held 1.5 s in its open transaction.
    let restarted = Instant::now();
    let mut r = Reporter::start(&args("1500"));
    let in_tx = wait_for(REJOIN_BOUND, || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        (n > 0).then_some(())
    })
    .await;
    assert!(
        in_tx.is_some(),
        "saw no batch transaction open within {REJOIN_BOUND:?} of the restart (group rejoin)"
    );
    println!(
        "restarted reporter had a batch transaction open after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    let before_kill = count(&db).await;
    r.kill9();
    println!("killed inside a transaction with {before_kill} rows");

    // 3. Restart without delays and let it finish.
    let restarted = Instant::now();
    let _r = Reporter::start(&args("0"));
    let done = wait_for(Duration::from_secs(120), || async {
        let n = count(&db).await;
        (n == expected.unique_events as i64).then_some(n)
    })
    .await;
    assert_eq!(
        done,
        Some(expected.unique_events as i64),
        "every distinct event stored once"
    );
    println!(
        "second restart: every event stored after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    // Nothing more arrives (no late double insert).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&db).await, expected.unique_events as i64);

    // Rollups: every kept (granularity, dimension) family adds up to the expected campaign
    // totals — folded and still pending deltas together (`rollups_all`, what the API reads;
    // the reporter was killed twice, mid-fold perhaps) — and no other family is written.
    let stray: i64 = db
        .query_one(
            "SELECT count(*) FROM rollups_all
             WHERE (gran, dim) NOT IN (SELECT * FROM unnest($1::smallint[], $2::smallint[]))",
            &[
                &FAMILIES.iter().map(|f| f.0).collect::<Vec<i16>>(),
                &FAMILIES.iter().map(|f| f.1).collect::<Vec<i16>>(),
            ],
        )
        .await
        .expect("stray rollups")
        .get(0);
    assert_eq!(stray, 0, "rows only in the kept families");
    check_families(&db, expected, "rollups_all").await;
    // The folder task empties `rollup_pending` within a few seconds; then the folded rows
    // alone hold every family exactly (each pending delta folded once, none lost).
    let t = Instant::now();
    loop {
        let pending: i64 = db
            .query_one("SELECT count(*) FROM rollup_pending", &[])
            .await
            .expect("pending")
            .get(0);
        if pending == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{pending} rollup deltas still pending after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_families(&db, expected, "rollups").await;
    for gran in [1i16, 2, 3] {
        let rows = db
            .query(
                "SELECT reason, sum(nobids)::bigint FROM nobid_rollups WHERE gran = $1 GROUP BY 1 ORDER BY 1",
                &[&gran],
            )
            .await
            .expect("nobid rollups");
        let got: Vec<(u16, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, i32>(0) as u16, r.get(1)))
            .collect();
        let want: Vec<(u16, i64)> = expected.nobids.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want, "no-bids by reason, gran {gran}");
    }

    // Offsets recorded with the rows cover every message (events + 5 garbage).
    let next = ingest.recorded_offsets(&db).await;
    assert_eq!(next, ingest.events.len() as i64 + 5);

    drop(_r);
    drop(db);
    ingest.tdb.drop_db().await;
}

/// Every kept (granularity, dimension) family of `table` adds up to the expected campaign
/// totals.
async fn check_families(db: &tokio_postgres::Client, expected: &Expected, table: &str) {
    for &(gran, dim) in FAMILIES {
        let rows = db
            .query(
                &format!(
                    "SELECT campaign_id, advertiser_id, sum(bids)::bigint, sum(wins)::bigint,
                        sum(losses)::bigint, sum(impressions)::bigint, sum(clicks)::bigint,
                        sum(bid_cpm_micros)::bigint, sum(spend_cpm_micros)::bigint
                 FROM {table} WHERE gran = $1 AND dim = $2 GROUP BY 1, 2 ORDER BY 1"
                ),
                &[&gran, &dim],
            )
            .await
            .expect("rollups");
        assert_eq!(
            rows.len(),
            expected.campaigns.len(),
            "{table}: gran {gran} dim {dim}"
        );
        for row in rows {
            let cid: i64 = row.get(0);
            let want = expected.campaigns[&(cid as u32)];
            let got = (
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3),
                row.get::<_, i64>(4),
                row.get::<_, i64>(5),
                row.get::<_, i64>(6),
                row.get::<_, i64>(7),
                row.get::<_, i64>(8),
            );
            let exp = (
                want.advertiser_id as i64,
                want.bids,
                want.wins,
                want.losses,
                want.impressions,
                want.clicks,
                want.bid_cpm_micros,
                want.spend_cpm_micros,
            );
            assert_eq!(got, exp, "{table}: campaign {cid} gran {gran} dim {dim}");
        }
    }
}

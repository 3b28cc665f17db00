//! PostgreSQL crashes under an ingest that commits asynchronously (`--pg-async-commit`, issue 8):
//! exactly once must still hold. The test runs its own PostgreSQL (scripts/services.sh on a free
//! port and its own run dir) with the WAL writer slowed to one flush per 10 s, so that batches
//! stay committed-but-not-on-disk for seconds; produces a synthetic run to the real broker;
//! starts one reporter with small batches; and while batches flow kills PostgreSQL with an
//! immediate shutdown (SIGQUIT: no more WAL written — the commits not yet flushed are lost, as
//! in a crash), then starts it again (crash recovery). The same reporter process, never
//! restarted, must end with every distinct event stored once, the spend equal to the run's
//! billing notices, and offsets covering every message: the batches lost with PostgreSQL were
//! read again from Kafka because their offsets had been held back until their commit was on
//! disk (reporter/src/ingest/durable.rs).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::own_pg::{OwnPg, count_events as count, free_port};
use common::*;
use reporter::synth::{Expected, RunConfig, generate};

/// One writer connection: the batch's offsets ride in its asynchronously committed transaction
/// and wait for the durability gate (reporter/src/ingest/durable.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_under_async_commit_neither_loses_nor_double_counts() {
    crash_mid_ingest("1").await;
}

/// Two writer connections (the default since session 8): the parts commit asynchronously, the
/// offsets in a synchronous statement after them; a batch that lost a connection is written
/// again before its offsets are committed (session 8: before that, parts acknowledged and then
/// lost with PostgreSQL were never written again — this test failed, the run never complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_with_two_writers_neither_loses_nor_double_counts() {
    crash_mid_ingest("2").await;
}

async fn crash_mid_ingest(writers: &str) {
    let Some((_, Some(brokers))) = services("pg_crash", true) else {
        return;
    };
    let cache = std::env::var("HELIOS_CACHE").unwrap_or_else(|_| "/var/cache/helios".into());
    let run = PathBuf::from(format!(
        "{cache}/run-reporter-crash-{}-{writers}",
        std::process::id()
    ));
    let Some(pg) = OwnPg::start("pg_crash", run, free_port()) else {
        return;
    };
    {
        // Commits reach the disk only every 10 s (or when a synchronous commit flushes).
        let su = reporter::db::connect(&pg.superuser_url())
            .await
            .expect("superuser connection");
        for sql in [
            "ALTER SYSTEM SET wal_writer_delay = '10s'",
            "ALTER SYSTEM SET wal_writer_flush_after = '1GB'",
            "SELECT pg_reload_conf()",
        ] {
            su.batch_execute(sql).await.expect("slow WAL writer");
        }
    }
    let tdb = TestDb::create(&pg.admin_url()).await;
    let suffix = format!(".{}", unique("crash"));
    let topics = create_topics(&brokers, &suffix, 3).await;
    let group = unique("g");
    let cfg = RunConfig::small(13, 20_000, now_ns() - 600_000_000_000, 600_000_000_000);
    let events = generate(&cfg);
    let expected = Expected::of(&events);
    produce(&brokers, &suffix, &events, 3);
    let want = expected.unique_events as i64;

    let topics_arg = topics.join(",");
    let mut r = Reporter::start(&[
        "--mode",
        "ingest",
        "--pg-url",
        &tdb.url,
        "--kafka-brokers",
        &brokers,
        "--group-id",
        &group,
        "--topics",
        &topics_arg,
        "--create-partitions",
        "0",
        "--batch-max",
        "1000",
        "--batch-wait-ms",
        "50",
        "--pg-async-commit",
        "true",
        "--pg-writers",
        writers,
        // Slow batches (a pause before each PostgreSQL commit and before each Kafka commit) so
        // the crash lands mid-ingest.
        "--fault-delay-ms",
        "200",
        "--log",
        "warn",
    ]);

    let before = wait_for(Duration::from_secs(60), || async {
        count(&tdb.url).await.filter(|n| *n >= 3000)
    })
    .await
    .expect("batches committed");
    assert!(before < want, "the crash lands mid-ingest");
    pg.stop_immediate();
    assert!(pg.services("start"), "restart our own PostgreSQL");
    let after = count(&tdb.url).await;
    println!(
        "rows committed before the crash: ≥ {before}; after crash recovery: {after:?} \
         (fewer = commits lost with the WAL buffers)"
    );

    let done = wait_for(Duration::from_secs(180), || async {
        count(&tdb.url).await.filter(|n| *n >= want)
    })
    .await;
    assert_eq!(done, Some(want), "every distinct event stored once");
    assert!(
        r.child.try_wait().ok().flatten().is_none(),
        "the reporter rode the crash out"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&tdb.url).await, Some(want), "no late double insert");

    let db = tdb.client().await;
    let spend: i64 = db
        .query_one(
            "SELECT coalesce(sum(spend_cpm_micros), 0)::bigint FROM rollups \
             WHERE gran = 1 AND dim = 0",
            &[],
        )
        .await
        .expect("spend")
        .get(0);
    let want_spend: i64 = expected
        .campaigns
        .values()
        .map(|c| c.spend_cpm_micros)
        .sum();
    assert_eq!(spend, want_spend, "spend equals the sum of billing notices");
    let bids: i64 = db
        .query_one(
            "SELECT coalesce(sum(bids), 0)::bigint FROM rollups WHERE gran = 3 AND dim = 0",
            &[],
        )
        .await
        .expect("bids")
        .get(0);
    let want_bids: i64 = expected.campaigns.values().map(|c| c.bids).sum();
    assert_eq!(bids, want_bids, "bids counted once");
    let next: i64 = db
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM ingest_offsets WHERE group_id = $1",
            &[&group],
        )
        .await
        .expect("offsets")
        .get(0);
    assert_eq!(next, events.len() as i64 + 3, "offsets cover every message");

    r.kill9();
    drop(db);
    tdb.drop_db().await;
}

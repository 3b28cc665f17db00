//! PostgreSQL restarted under ingest (issue 12, faults): the test starts its own PostgreSQL
//! (scripts/services.sh with its own run dir and port, default 5447 — `HELIOS_REL_PG_PORT`),
//! produces a synthetic run to the real broker, lets the real reporter ingest it, and while
//! batches are flowing stops PostgreSQL (fast shutdown of the postmaster, by PID) for 2 s and
//! starts it again. The reporter either rides it out or exits with an error (its writer fails for
//! good on a lost connection) — then it is restarted, as a supervisor would. Either way, at the
//! end every distinct event is stored exactly once and the recorded offsets cover every message.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ingest::IngestRun;
use common::own_pg::{OwnPg, count_events as count, first_batch, rows_reach};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_ingest_every_event_stored_once() {
    // Needs the broker of `make test`; PostgreSQL is our own (we restart it).
    let Some((_, Some(brokers))) = services("pg_restart", true) else {
        return;
    };
    let port = std::env::var("HELIOS_REL_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5447);
    let run = PathBuf::from(format!(
        "/var/cache/helios/run-rel/pg-restart-{}",
        std::process::id()
    ));
    let Some(pg) = OwnPg::start("pg_restart", run, port) else {
        return;
    };
    let ingest = IngestRun::produce(&pg.admin_url(), &brokers, "pgr", 7, 3).await;
    let (tdb, expected) = (&ingest.tdb, &ingest.expected);
    // Slow batches so the restart lands mid-ingest. One writer connection (the offsets in the
    // batch's own transaction), where `pg_reconnect` and `ingest_exactly_once` run the default
    // two: both write paths meet a restart.
    let one_writer = |mut args: Vec<String>| {
        args.extend(["--pg-writers", "1"].map(String::from));
        args
    };
    let mut r = Reporter::start(&one_writer(ingest.reporter_args("ingest", "1000", "300")));

    let first = first_batch(&tdb.url)
        .await
        .expect("a first batch committed");
    assert!(
        first < expected.unique_events as i64,
        "restart lands mid-ingest"
    );

    pg.stop_fast();
    println!("PostgreSQL stopped with {first} rows stored");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pg.services("start"), "restart our own PostgreSQL");

    // Give the reporter a moment; if it exited (writer failed for good), restart it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exited = r.child.try_wait().ok().flatten();
    println!("reporter after the restart: {exited:?} (None = still running)");
    let no_delay = one_writer(ingest.reporter_args("ingest", "1000", "0"));
    if exited.is_some() {
        assert!(
            !exited.is_some_and(|s| s.success()),
            "a reporter that lost PostgreSQL must not exit successfully"
        );
        r = Reporter::start(&no_delay);
    }

    let want = expected.unique_events as i64;
    let done = rows_reach(&tdb.url, want, Duration::from_secs(120)).await;
    if done.is_none() && r.child.try_wait().ok().flatten().is_some() {
        // It exited later (e.g. on its next batch): restart once more and wait again.
        r = Reporter::start(&no_delay);
    }
    let done = match done {
        Some(n) => Some(n),
        None => rows_reach(&tdb.url, want, Duration::from_secs(120)).await,
    };
    assert_eq!(done, Some(want), "every distinct event stored once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&tdb.url).await, Some(want), "no late double insert");

    let db = tdb.client().await;
    let next = ingest.recorded_offsets(&db).await;
    assert_eq!(
        next,
        ingest.events.len() as i64 + 3,
        "offsets cover every message"
    );
    let spend: i64 = db
        .query_one(
            "SELECT coalesce(sum(spend_cpm_micros), 0)::bigint FROM rollups WHERE gran = 1 AND dim = 0",
            &[],
        )
        .await
        .expect("spend")
        .get(0);
    let want_spend = ingest.spend_cpm_micros();
    assert_eq!(spend, want_spend, "spend equals the sum of billing notices");

    r.kill9();
    drop(db);
    ingest.tdb.drop_db().await;
}

//! PostgreSQL restarted under ingest, and the reporter rides it out (issue 8): the test runs its
//! own PostgreSQL (scripts/services.sh on a free port and its own run dir), produces a synthetic
//! run to the real broker, and starts one reporter (ingest + API). While batches flow it stops
//! PostgreSQL (fast shutdown of the postmaster, by PID) for a few seconds, checks that the API
//! answers 503 with a JSON error and that `/metrics` still answers and shows the ingest paused,
//! starts PostgreSQL again, and then requires — from the same reporter process, never restarted
//! — every distinct event stored once, every rollup family equal to the run's totals, offsets
//! covering every message, and the reconnection counted in the metrics.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ingest::IngestRun;
use common::own_pg::{OwnPg, count_events as count, first_batch, free_port, rows_reach};
use common::*;
use reporter::api::auth::{Auth, Role};
use reporter::ingest::fold::FAMILIES;

/// The value of an unlabelled metric in a Prometheus text body.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_rides_out_a_postgres_restart_and_counts_every_event_once() {
    let Some((_, Some(brokers))) = services("pg_reconnect", true) else {
        return;
    };
    let cache = std::env::var("HELIOS_CACHE").unwrap_or_else(|_| "/var/cache/helios".into());
    let run = PathBuf::from(format!(
        "{cache}/run-reporter-reconnect-{}",
        std::process::id()
    ));
    let Some(pg) = OwnPg::start("pg_reconnect", run, free_port()) else {
        return;
    };
    let ingest = IngestRun::produce(&pg.admin_url(), &brokers, "pgc", 17, 3).await;
    let (tdb, expected) = (&ingest.tdb, &ingest.expected);

    let secret = "reconnect-test-secret-reconnect-test-secret";
    let api_port = free_port().to_string();
    let listen = format!("127.0.0.1:{api_port}");
    // Slow batches so the restart lands mid-ingest, with a batch transaction open.
    let mut args = ingest.reporter_args("all", "1000", "300");
    args.extend(["--listen", &listen, "--jwt-secret", secret].map(String::from));
    let mut r = Reporter::start(&args);
    let token = Auth::new(secret.as_bytes())
        .expect("auth")
        .mint(Role::Operator, None, "test", 600)
        .expect("token");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let base = format!("http://{listen}");

    let first = first_batch(&tdb.url)
        .await
        .expect("a first batch committed");
    assert!(
        first < expected.unique_events as i64,
        "the restart lands mid-ingest"
    );

    pg.stop_fast();
    println!("PostgreSQL stopped with {first} rows stored");

    // While it is down: the API answers 503 with a JSON body, /metrics still answers and shows
    // the ingest without its connection.
    let unavailable = wait_for(Duration::from_secs(10), || async {
        let resp = http
            .get(format!("{base}/api/v1/campaigns"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        let body: serde_json::Value = resp.json().await.ok()?;
        (status == 503).then_some((body, retry_after))
    })
    .await;
    let (body, retry_after) = unavailable.expect("the API answers 503 while PostgreSQL is down");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("try again")),
        "{body}"
    );
    assert!(retry_after, "503 carries Retry-After");
    let paused = wait_for(Duration::from_secs(15), || async {
        let m = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (metric(&m, "helios_reporter_pg_connected") == Some(0.0)).then_some(m)
    })
    .await
    .expect("/metrics answers and shows the ingest paused while PostgreSQL is down");
    assert_eq!(metric(&paused, "helios_reporter_api_db_up"), Some(0.0));
    let stalled = count(&tdb.url).await;
    assert_eq!(stalled, None, "PostgreSQL is really down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        r.child.try_wait().ok().flatten().is_none(),
        "the reporter keeps running while PostgreSQL is down"
    );

    assert!(pg.services("start"), "restart our own PostgreSQL");
    println!("PostgreSQL started again");

    let want = expected.unique_events as i64;
    let done = rows_reach(&tdb.url, want, Duration::from_secs(180)).await;
    assert_eq!(done, Some(want), "every distinct event stored once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&tdb.url).await, Some(want), "no late double insert");
    assert!(
        r.child.try_wait().ok().flatten().is_none(),
        "the same reporter process did it all"
    );

    let db = tdb.client().await;
    let next = ingest.recorded_offsets(&db).await;
    assert_eq!(
        next,
        ingest.events.len() as i64 + 3,
        "offsets cover every message"
    );
    let want_spend = ingest.spend_cpm_micros();
    let want_bids: i64 = expected.campaigns.values().map(|c| c.bids).sum();
    for &(gran, dim) in FAMILIES {
        let row = db
            .query_one(
                "SELECT coalesce(sum(spend_cpm_micros), 0)::bigint, coalesce(sum(bids), 0)::bigint
                 FROM rollups_all WHERE gran = $1 AND dim = $2",
                &[&gran, &dim],
            )
            .await
            .expect("rollups");
        let got: (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(got, (want_spend, want_bids), "gran {gran} dim {dim}");
    }

    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert_eq!(metric(&m, "helios_reporter_pg_connected"), Some(1.0));
    assert!(metric(&m, "helios_reporter_pg_lost_total").is_some_and(|v| v >= 1.0));
    assert!(metric(&m, "helios_reporter_pg_reconnects_total").is_some_and(|v| v >= 1.0));
    assert!(metric(&m, "helios_reporter_api_unavailable_total").is_some_and(|v| v >= 1.0));
    assert_eq!(metric(&m, "helios_reporter_api_db_up"), Some(1.0));
    let ok = http
        .get(format!("{base}/api/v1/campaigns"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("campaigns");
    assert_eq!(ok.status().as_u16(), 200, "the API is back");

    r.kill9();
    drop(db);
    ingest.tdb.drop_db().await;
}

//! Campaign management against the real PostgreSQL and Redis: advertisers change only their own
//! campaigns, the bidder's rules give field errors and publish nothing, every accepted change is
//! versioned, audited and published (set, change stream, budget keys); and a change made through
//! the API is bidding (or stops bidding) on a running `helios` appliance within 1 s.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use reporter::api::auth::{Auth, Role};
use reporter::api::manage::ControlPlane;
use reporter::api::{AppState, pool::Pool, router};
use reporter::ingest::stats::IngestStats;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// `HELIOS_REDIS_URL` with database `db` (each test its own), or `None` (skipped).
fn redis_url(test: &str, db: u8) -> Option<String> {
    match std::env::var("HELIOS_REDIS_URL") {
        Ok(u) => Some(format!("{}/{db}", u.trim_end_matches('/'))),
        Err(_) if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: HELIOS_REDIS_URL is not set and HELIOS_REQUIRE_SERVICES=1")
        }
        Err(_) => {
            println!("skipped: {test}: HELIOS_REDIS_URL not set");
            None
        }
    }
}

fn redis_con(url: &str) -> redis::Connection {
    let mut c = redis::Client::open(url)
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    redis::cmd("FLUSHDB").exec(&mut c).expect("flushdb");
    c
}

fn get_i64(c: &mut redis::Connection, key: &str) -> Option<i64> {
    redis::cmd("GET").arg(key).query(c).expect("redis get")
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn spec(bid: i64) -> Value {
    json!({
        "name": "Spring sale", "bid_cpm_micros": bid, "total_budget_micros": 5_000_000_000i64,
        "creatives": [{ "id": 1, "format": { "type": "banner", "w": 300, "h": 250 },
                        "adm": "<a href='https://acme.example'>Acme</a>" }]
    })
}

struct Setup {
    tdb: TestDb,
    app: axum::Router,
    op: String,
    a: String,
    b: String,
}

async fn setup(pg: &str, redis: &str) -> Setup {
    let (tdb, _c) = TestDb::migrated(pg).await;
    let auth = Auth::new(SECRET).expect("auth");
    let op = auth.mint(Role::Operator, None, "ops", 600).expect("token");
    let a = auth
        .mint(Role::Advertiser, Some(1), "alice", 600)
        .expect("token");
    let b = auth
        .mint(Role::Advertiser, Some(2), "bob", 600)
        .expect("token");
    let state = AppState {
        db: Arc::new(Pool::connect(&tdb.url, 2).await.expect("pool")),
        auth: Arc::new(auth),
        ingest: Arc::new(IngestStats::default()),
    };
    let cp = Arc::new(ControlPlane::new(&tdb.url, redis).expect("control plane"));
    let app = router(state, None).layer(axum::Extension(cp));
    for (id, name) in [(1, "Acme"), (2, "Globex")] {
        let (s, body) = call(
            &app,
            "POST",
            "/api/v1/advertisers",
            Some(&op),
            Some(json!({ "advertiser_id": id, "name": name })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    Setup { tdb, app, op, a, b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_scoped_validated_versioned_audited_and_published() {
    let Some((pg, _)) = services("campaigns_manage", false) else {
        return;
    };
    let Some(redis) = redis_url("campaigns_manage", 11) else {
        return;
    };
    let mut r = redis_con(&redis);
    let Setup { tdb, app, op, a, b } = setup(&pg, &redis).await;

    // An advertiser may not create for another one; nobody without a token.
    let mut other = spec(1_000_000);
    other["advertiser_id"] = json!(2);
    let (s, _) = call(&app, "POST", "/api/v1/campaigns", Some(&a), Some(other)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&app, "POST", "/api/v1/campaigns", None, Some(spec(1))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Created, published: the set in Redis compiles, has the campaign, and its budget is there.
    let (s, body) = call(
        &app,
        "POST",
        "/api/v1/campaigns",
        Some(&a),
        Some(spec(2_000_000)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["published"], true);
    let cid = body["campaign_id"].as_i64().expect("id");
    let v_created = body["set_version"].as_i64().expect("version");
    assert_eq!(v_created, 3, "two advertisers, then the campaign");
    let json: Vec<u8> = redis::cmd("GET")
        .arg("helios:campaigns")
        .query(&mut r)
        .expect("set");
    let set = shards::CompiledSet::parse(&json).expect("the published set compiles");
    assert_eq!(set.version, 3);
    assert_eq!(set.compiled.len(), 1);
    assert_eq!(i64::from(set.compiled[0].id), cid);
    assert_eq!(get_i64(&mut r, "helios:campaigns:version"), Some(3));
    let xlen: i64 = redis::cmd("XLEN")
        .arg("helios:campaigns:changes")
        .query(&mut r)
        .expect("xlen");
    assert_eq!(xlen, 3);
    let remaining = format!("helios:budget:{{{cid}}}:remaining");
    assert_eq!(get_i64(&mut r, &remaining), Some(5_000_000_000));

    // What the bidder refuses: 422 with the field, nothing stored or published.
    let mut bad = spec(0);
    bad["id"] = json!(cid + 1);
    let (s, body) = call(&app, "POST", "/api/v1/campaigns", Some(&a), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "bid_cpm_micros");
    let (s, body) = call(
        &app,
        "POST",
        &format!("/api/v1/campaigns/{cid}/creatives"),
        Some(&a),
        Some(json!({ "id": 2, "format": { "type": "banner", "w": 0, "h": 250 }, "adm": "x" })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "creatives[].format");
    let mut unknown = spec(1_000_000);
    unknown["targeting"] = json!({ "countries": ["USA"], "colour": "red" });
    let (s, body) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/spec"),
        Some(&a),
        Some(unknown),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "targeting.colour");
    assert_eq!(get_i64(&mut r, "helios:campaigns:version"), Some(3));

    // Another advertiser sees and changes nothing of A's (404, as if absent).
    for (m, path, body) in [
        ("GET", format!("/api/v1/campaigns/{cid}/spec"), None),
        ("GET", format!("/api/v1/campaigns/{cid}/versions"), None),
        (
            "PUT",
            format!("/api/v1/campaigns/{cid}/status"),
            Some(json!({ "status": "paused" })),
        ),
        (
            "PUT",
            format!("/api/v1/campaigns/{cid}/budget"),
            Some(json!({ "total_budget_micros": 1 })),
        ),
        (
            "DELETE",
            format!("/api/v1/campaigns/{cid}/creatives/1"),
            None,
        ),
    ] {
        let (s, _) = call(&app, m, &path, Some(&b), body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path}");
    }
    let (s, _) = call(&app, "GET", "/api/v1/audit?advertiser_id=1", Some(&b), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = call(&app, "GET", "/api/v1/audit", Some(&b), None).await;
    assert_eq!(s, StatusCode::OK);
    let items = body["items"].as_array().expect("items");
    assert!(
        !items.is_empty() && items.iter().all(|i| i["advertiser_id"] == 2),
        "{body}"
    );
    assert_eq!(get_i64(&mut r, "helios:campaigns:version"), Some(3));

    // Pause, budget up and down (remaining moves by the difference), archive.
    let (s, body) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/status"),
        Some(&a),
        Some(json!({ "status": "paused" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let json: Vec<u8> = redis::cmd("GET")
        .arg("helios:campaigns")
        .query(&mut r)
        .expect("set");
    let set = shards::CompiledSet::parse(&json).expect("compiles");
    assert_eq!(set.campaigns[0].status, shards::campaign::Status::Paused);
    for (total, want_remaining) in [
        (7_000_000_000i64, 7_000_000_000i64),
        (6_000_000_000, 6_000_000_000),
    ] {
        let (s, body) = call(
            &app,
            "PUT",
            &format!("/api/v1/campaigns/{cid}/budget"),
            Some(&a),
            Some(json!({ "total_budget_micros": total, "daily_budget_micros": 1_000_000_000 })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(get_i64(&mut r, &remaining), Some(want_remaining));
    }
    let (s, body) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/budget"),
        Some(&a),
        Some(json!({ "total_budget_micros": -5 })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "total_budget_micros");
    let (s, _) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/status"),
        Some(&a),
        Some(json!({ "status": "archived" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let json: Vec<u8> = redis::cmd("GET")
        .arg("helios:campaigns")
        .query(&mut r)
        .expect("set");
    assert!(
        shards::CompiledSet::parse(&json)
            .expect("compiles")
            .is_empty()
    );
    let (s, _) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/status"),
        Some(&a),
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(get_i64(&mut r, "helios:campaigns:version"), Some(7));

    // Versions (who, which set) and the audit log an operator reads.
    let (s, body) = call(
        &app,
        "GET",
        &format!("/api/v1/campaigns/{cid}/versions"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let items = body["items"].as_array().expect("items");
    let vs: Vec<i64> = items.iter().filter_map(|i| i["version"].as_i64()).collect();
    assert_eq!(vs, vec![5, 4, 3, 2, 1]);
    assert!(items.iter().all(|i| i["changed_by"] == "alice"));
    assert_eq!(items[0]["set_version"], 7);
    let (s, body) = call(&app, "GET", "/api/v1/audit", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "campaign.archive",
            "campaign.budget",
            "campaign.budget",
            "campaign.pause",
            "campaign.create",
            "advertiser.upsert",
            "advertiser.upsert"
        ]
    );
    let (s, body) = call(&app, "GET", "/api/v1/campaign-set", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (body["version"].as_i64(), body["published_version"].as_i64()),
        (Some(7), Some(7))
    );
    // The reporting tables follow (names and budgets in reports and the pacing chart).
    let c = tdb.client().await;
    let row = c
        .query_one(
            "SELECT name, status, budget_micros FROM campaigns WHERE campaign_id = $1",
            &[&cid],
        )
        .await
        .expect("campaign row");
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2)
        ),
        ("Spring sale".into(), "archived".into(), 6_000_000_000)
    );
    // The OpenAPI document lists the routes.
    let (_, doc) = call(&app, "GET", "/api/v1/openapi.json", None, None).await;
    for p in reporter::api::manage::ROUTES {
        assert!(
            doc["paths"].get(*p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    drop(app);
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_repairs_a_redis_that_lost_the_set() {
    let Some((pg, _)) = services("campaigns_republish", false) else {
        return;
    };
    let Some(redis) = redis_url("campaigns_republish", 12) else {
        return;
    };
    let mut r = redis_con(&redis);
    let Setup { tdb, app, a, .. } = setup(&pg, &redis).await;
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/campaigns",
        Some(&a),
        Some(spec(1_000_000)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    redis::cmd("FLUSHDB").exec(&mut r).expect("flush");
    let cp = ControlPlane::new(&tdb.url, &redis).expect("cp");
    assert_eq!(cp.republish().await.expect("republish"), 3);
    assert_eq!(get_i64(&mut r, "helios:campaigns:version"), Some(3));
    // Repeating it changes nothing (budgets are not counted twice).
    assert_eq!(cp.republish().await.expect("republish"), 3);
    assert_eq!(
        get_i64(&mut r, "helios:budget:{1}:remaining"),
        Some(5_000_000_000)
    );
    drop(app);
    tdb.drop_db().await;
}

// ---------------------------------------------------------------- live on the appliance

struct Helios(Child);

impl Drop for Helios {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `helios` binary next to this test's directory (built by `cargo build --workspace`).
fn helios_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("helios");
    assert!(
        bin.is_file(),
        "{} missing: build the workspace (cargo build --workspace)",
        bin.display()
    );
    bin
}

async fn bid(client: &reqwest::Client, port: u16) -> u16 {
    let body = r#"{"id":"req-1","imp":[{"id":"i1","banner":{"w":300,"h":250}}],"tmax":500}"#;
    client
        .post(format!("http://127.0.0.1:{port}/openrtb2/bid"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls the bid port every 10 ms until it answers `want`; returns how long it took.
async fn until_status(client: &reqwest::Client, port: u16, want: u16, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if bid(client, port).await == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "no {want} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_change_is_bidding_on_every_running_appliance_within_a_second() {
    let Some((pg, _)) = services("campaigns_live", false) else {
        return;
    };
    let Some(redis) = redis_url("campaigns_live", 13) else {
        return;
    };
    let _r = redis_con(&redis);
    let Setup { tdb, app, a, .. } = setup(&pg, &redis).await;

    // Two nodes, as two processes on the same Redis.
    let nodes: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let _procs: Vec<Helios> = nodes
        .iter()
        .enumerate()
        .map(|(i, (port, admin))| {
            Helios(
                Command::new(helios_bin())
                    .args([
                        "--listen",
                        &format!("127.0.0.1:{port}"),
                        "--admin",
                        &format!("127.0.0.1:{admin}"),
                        "--cores",
                        "0",
                        "--node",
                        &format!("campaigns-test-{i}"),
                        "--log-level",
                        "warn",
                    ])
                    .env("HELIOS_EVENTS_ENABLED", "false")
                    .env("HELIOS_SERVER_DRIVER", "epoll")
                    .env("HELIOS_BIDDING_CAMPAIGNS_REDIS_URL", &redis)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("start helios"),
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let readyz = |c: reqwest::Client, admin: u16| async move {
        let r = c
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .ok()?;
        let ok = r.status().is_success();
        let t = r.text().await.ok()?;
        ok.then_some(t)
    };
    for &(port, admin) in &nodes {
        let ready = wait_for(Duration::from_secs(15), || readyz(client.clone(), admin))
            .await
            .expect("helios ready");
        assert!(ready.contains("campaign_set_version 2"), "{ready}");
        assert_eq!(bid(&client, port).await, 204, "no campaign yet");
    }

    // Created through the API → bidding on every node.
    let (s, body) = call(
        &app,
        "POST",
        "/api/v1/campaigns",
        Some(&a),
        Some(spec(2_000_000)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let cid = body["campaign_id"].as_i64().expect("id");
    let t0 = Instant::now();
    for &(port, _) in &nodes {
        until_status(&client, port, 200, Duration::from_secs(3)).await;
    }
    let took = t0.elapsed();
    println!("create → bidding on {} nodes: {took:?}", nodes.len());
    assert!(took < Duration::from_secs(1), "create took {took:?}");

    // Paused through the API → no longer bidding anywhere.
    let (s, _) = call(
        &app,
        "PUT",
        &format!("/api/v1/campaigns/{cid}/status"),
        Some(&a),
        Some(json!({ "status": "paused" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let t0 = Instant::now();
    for &(port, _) in &nodes {
        until_status(&client, port, 204, Duration::from_secs(3)).await;
    }
    let took = t0.elapsed();
    println!("pause → not bidding on {} nodes: {took:?}", nodes.len());
    assert!(took < Duration::from_secs(1), "pause took {took:?}");

    // Each node reports the version it runs: /readyz and the metric.
    for &(_, admin) in &nodes {
        let ready = wait_for(Duration::from_secs(2), || async {
            readyz(client.clone(), admin)
                .await
                .filter(|t| t.contains("campaign_set_version 4"))
        })
        .await;
        assert!(ready.is_some(), "readyz shows set 4");
        let metrics = client
            .get(format!("http://127.0.0.1:{admin}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("helios_campaign_set_version{core=\"0\"} 4"),
            "{metrics}"
        );
    }
    drop(app);
    tdb.drop_db().await;
}

//! The API against a real database filled by the real writer with a synthetic run of two
//! advertisers: figures match the run; advertiser A cannot read advertiser B by any route or
//! parameter; operators see everything; 401 and 403 come with JSON bodies.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use reporter::api::auth::{Auth, Role};
use reporter::api::{AppState, pool::Pool, router};
use reporter::ingest::row::Row;
use reporter::ingest::stats::IngestStats;
use reporter::ingest::writer::{FaultDelay, Writer};
use reporter::synth::{Expected, RunConfig, generate};
use serde_json::Value;
use tower::ServiceExt;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

async fn get(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

/// Every `advertiser_id` and `campaign_id` anywhere in a JSON value.
fn ids(v: &Value, adv: &mut Vec<i64>, camp: &mut Vec<i64>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_i64()) {
                    ("advertiser_id", Some(a)) => adv.push(a),
                    ("campaign_id", Some(c)) => camp.push(c),
                    _ => ids(x, adv, camp),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| ids(x, adv, camp)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertisers_see_only_their_own_and_figures_match() {
    let Some((pg, _)) = services("api_scope", false) else {
        return;
    };
    let (tdb, c) = TestDb::migrated(&pg).await;

    // Two hours of traffic ending 10 minutes ago, for advertisers 1 and 2.
    let now = now_ns();
    let start = now - 7_800_000_000_000;
    let cfg = RunConfig::small(9, 6_000, start, 7_200_000_000_000);
    let events = generate(&cfg);
    let expected = Expected::of(&events);
    let rows: Vec<Row> = events.iter().map(Row::from_event).collect();
    let mut w = Writer::new(
        &tdb.url,
        "api-test",
        30,
        FaultDelay::default(),
        Arc::new(IngestStats::default()),
    );
    for chunk in rows.chunks(2_500) {
        w.write(chunk, &Vec::new()).await.expect("write");
    }
    // A budget and flight for one of A's campaigns (the rest are known from events only).
    let a_cid = reporter::synth::campaign_id(1, 0) as i64;
    let start_s = (start / 1_000_000_000) as i64;
    c.execute(
        "INSERT INTO campaigns (campaign_id, advertiser_id, name, budget_micros, start_at, end_at)
         VALUES ($1, 1, 'Spring sale', 5000000000, to_timestamp($2::bigint), to_timestamp($2::bigint) + interval '4 hours')",
        &[&a_cid, &start_s],
    )
    .await
    .expect("campaign row");
    c.execute(
        "INSERT INTO advertisers VALUES (1, 'Acme'), (2, 'Globex')",
        &[],
    )
    .await
    .expect("advertisers");

    let auth = Auth::new(SECRET).expect("auth");
    let tok_a = auth
        .mint(Role::Advertiser, Some(1), "a", 600)
        .expect("token");
    let tok_b = auth
        .mint(Role::Advertiser, Some(2), "b", 600)
        .expect("token");
    let tok_op = auth.mint(Role::Operator, None, "ops", 600).expect("token");
    let state = AppState {
        db: Arc::new(Pool::connect(&tdb.url, 2).await.expect("pool")),
        auth: Arc::new(auth),
        ingest: Arc::new(IngestStats::default()),
    };
    let app = router(state, None);

    // Public document; everything else needs a token.
    let (s, doc) = get(&app, "/api/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let (s, body) = get(&app, "/api/v1/campaigns", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let forged = Auth::new(b"some-other-secret-some-other-secret!")
        .expect("auth")
        .mint(Role::Operator, None, "x", 600)
        .expect("token");
    let (s, body) = get(&app, "/api/v1/campaigns", Some(&forged)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap_or("").contains("signature"));

    let range = format!("from={}&to={}", start_s - 3600, now / 1_000_000_000 + 3600);
    let b_cid = reporter::synth::campaign_id(2, 0);

    // A's own figures match the run.
    let (s, body) = get(&app, &format!("/api/v1/campaigns?{range}"), Some(&tok_a)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    for it in items {
        let cid = it["campaign_id"].as_i64().expect("id") as u32;
        let want = expected.campaigns[&cid];
        assert_eq!(it["advertiser_id"], 1);
        assert_eq!(it["figures"]["impressions"], want.impressions);
        assert_eq!(it["figures"]["bids"], want.bids);
        assert_eq!(it["figures"]["spend_micros"], want.spend_cpm_micros / 1000);
    }
    let named = items
        .iter()
        .find(|i| i["campaign_id"] == a_cid)
        .expect("named campaign");
    assert_eq!(
        (named["name"].as_str(), named["status"].as_str()),
        (Some("Spring sale"), Some("active"))
    );

    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&granularity=hour"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let t = &body["series"][0]["totals"];
    let want = expected.advertiser(1);
    assert_eq!(
        (
            t["bids"].as_i64(),
            t["impressions"].as_i64(),
            t["clicks"].as_i64()
        ),
        (Some(want.bids), Some(want.impressions), Some(want.clicks))
    );
    assert_eq!(t["spend_micros"], want.spend_cpm_micros / 1000);
    let points: i64 = body["series"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["impressions"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(points, want.impressions);

    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&granularity=minute&campaign_id={a_cid}"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["series"][0]["totals"]["wins"],
        expected.campaigns[&(a_cid as u32)].wins
    );

    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&group_by=site&limit=50"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let site_imps: i64 = body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["totals"]["impressions"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(site_imps, want.impressions);
    assert_eq!(
        body["granularity"], "hour",
        "per-site series are at least hourly"
    );

    // Day figures per site are summed from the hour rows (no day-per-site rollups are kept).
    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&group_by=site&granularity=day&limit=50"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let series = body["series"].as_array().expect("series");
    let day_imps: i64 = series
        .iter()
        .map(|s| s["totals"]["impressions"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(day_imps, want.impressions);
    assert!(series.iter().all(|s| {
        s["points"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["t"].as_i64().unwrap_or(1) % 86_400 == 0))
    }));

    // Per-minute figures exist for campaign totals only.
    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&group_by=country&granularity=minute"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_request");

    let (s, body) = get(
        &app,
        &format!("/api/v1/campaigns/{a_cid}/pacing"),
        Some(&tok_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["spent_micros"],
        expected.campaigns[&(a_cid as u32)].spend_cpm_micros / 1000
    );
    assert_eq!(body["budget_micros"], 5_000_000_000i64);
    let pts = body["points"].as_array().expect("points");
    assert!(pts.len() >= 2);
    assert!(
        pts.windows(2)
            .all(|w| w[0]["spent_micros"].as_i64() <= w[1]["spent_micros"].as_i64())
    );

    // A cannot read B: by route, by parameter, by grouping.
    let forbidden = [
        "/api/v1/advertisers/2".to_owned(),
        "/api/v1/campaigns?advertiser_id=2".to_owned(),
        format!("/api/v1/campaigns/{b_cid}"),
        format!("/api/v1/campaigns/{b_cid}/pacing"),
        format!("/api/v1/stats?{range}&campaign_id={b_cid}"),
        format!("/api/v1/stats?{range}&advertiser_id=2"),
        format!("/api/v1/stats?{range}&advertiser_id=2&campaign_id={b_cid}"),
        format!("/api/v1/stats?{range}&advertiser_id=1&campaign_id={b_cid}"),
        format!("/api/v1/stats?{range}&group_by=advertiser"),
        format!("/api/v1/top-sites?{range}&advertiser_id=2"),
        format!("/api/v1/top-sites?{range}&campaign_id={b_cid}"),
        format!("/api/v1/nobid-reasons?{range}"),
        "/api/v1/ingest".to_owned(),
    ];
    for path in &forbidden {
        let (s, body) = get(&app, path, Some(&tok_a)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "forbidden", "{path}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // And what A may read never holds B's ids.
    let allowed = [
        "/api/v1/me".to_owned(),
        "/api/v1/advertisers".to_owned(),
        "/api/v1/advertisers/1".to_owned(),
        format!("/api/v1/campaigns?{range}"),
        format!("/api/v1/campaigns?{range}&advertiser_id=1"),
        format!("/api/v1/stats?{range}&group_by=campaign"),
        format!("/api/v1/stats?{range}&group_by=creative"),
        format!("/api/v1/top-sites?{range}"),
    ];
    for path in &allowed {
        let (s, body) = get(&app, path, Some(&tok_a)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        let (mut adv, mut camp) = (Vec::new(), Vec::new());
        ids(&body, &mut adv, &mut camp);
        assert!(
            adv.iter().all(|a| *a == 1),
            "{path} leaks advertisers {adv:?}"
        );
        assert!(
            camp.iter().all(|c| c / 100 == 1),
            "{path} leaks campaigns {camp:?}"
        );
        if path.contains("group_by=campaign") {
            for s in body["series"].as_array().expect("series") {
                assert!(
                    s["key"]
                        .as_str()
                        .and_then(|k| k.parse::<i64>().ok())
                        .is_some_and(|c| c / 100 == 1)
                );
            }
        }
        if path.contains("group_by=creative") {
            for s in body["series"].as_array().expect("series") {
                let k: i64 = s["key"]
                    .as_str()
                    .and_then(|k| k.parse().ok())
                    .expect("creative id");
                assert_eq!(k / 1000, 1, "creative {k} is A's");
            }
        }
    }
    let (_, advs) = get(&app, "/api/v1/advertisers", Some(&tok_a)).await;
    assert_eq!(advs["items"].as_array().map(Vec::len), Some(1));
    // B reading A's named campaign is refused too.
    let (s, _) = get(&app, &format!("/api/v1/campaigns/{a_cid}"), Some(&tok_b)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Operators see all.
    let (s, body) = get(&app, &format!("/api/v1/campaigns?{range}"), Some(&tok_op)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["items"].as_array().map(Vec::len),
        Some(expected.campaigns.len())
    );
    let (s, body) = get(
        &app,
        &format!("/api/v1/nobid-reasons?{range}"),
        Some(&tok_op),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let total: i64 = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["nobids"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, expected.nobids.values().sum::<i64>());
    let (s, body) = get(
        &app,
        &format!("/api/v1/stats?{range}&group_by=advertiser"),
        Some(&tok_op),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["series"].as_array().map(Vec::len), Some(2));

    // Prometheus metrics: spend and budget per campaign.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    let want = expected.campaigns[&(a_cid as u32)].spend_cpm_micros / 1000;
    assert!(
        text.contains(&format!(
            "helios_campaign_spend_micros{{campaign=\"{a_cid}\"}} {want}\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "helios_campaign_budget_micros{{campaign=\"{a_cid}\"}} 5000000000\n"
    )));
    assert!(text.contains("helios_reporter_inserted_total 0"));

    // Bad parameters are 400 with a JSON body; unknown campaigns 404.
    let (s, body) = get(&app, "/api/v1/stats?from=10&to=5", Some(&tok_op)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (s, body) = get(&app, "/api/v1/stats?granularity=week", Some(&tok_op)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (s, _) = get(
        &app,
        "/api/v1/stats?from=0&to=31536000&granularity=minute",
        Some(&tok_op),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&app, "/api/v1/campaigns/999999", Some(&tok_op)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&app, "/api/v1/campaigns/abc", Some(&tok_op)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    drop(app);
    drop(c);
    drop(w);
    tdb.drop_db().await;
}

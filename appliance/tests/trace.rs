//! The decision trace on demand, through the real binary: an allowed exchange asking with
//! `X-Helios-Trace: 1` (or sending `"test": 1`) gets which campaigns were considered and why each
//! was dropped; anyone else gets the normal answer. The normal path's zero allocations are checked
//! in tests/server.rs (`warm_requests_allocate_nothing_on_core_threads`).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

/// Five campaigns, each dropping out (or not) for a reason the trace must name.
const SET: &str = r#"{"version":1,"campaigns":[
  {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000,
   "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["a.example"],"adm":"<a>7</a>"}]},
  {"id":8,"advertiser_id":80,"status":"active","bid_cpm_micros":9000000,"total_budget_micros":1000000000,
   "countries":["FRA"],
   "creatives":[{"id":81,"format":{"type":"banner","w":300,"h":250},"adomain":["b.example"],"adm":"<a>8</a>"}]},
  {"id":9,"advertiser_id":90,"status":"active","bid_cpm_micros":3000000,"total_budget_micros":1000000000,
   "creatives":[{"id":91,"format":{"type":"banner","w":728,"h":90},"adomain":["c.example"],"adm":"<a>9</a>"}]},
  {"id":10,"advertiser_id":100,"status":"paused","bid_cpm_micros":3000000,"total_budget_micros":1000000000,
   "creatives":[{"id":101,"format":{"type":"banner","w":300,"h":250},"adomain":["d.example"],"adm":"<a>10</a>"}]},
  {"id":11,"advertiser_id":110,"status":"active","bid_cpm_micros":1000000,"total_budget_micros":1000000000,
   "creatives":[{"id":111,"format":{"type":"banner","w":300,"h":250},"adomain":["e.example"],"adm":"<a>11</a>"}]}]}"#;

const REQ: &str = r#"{"id":"t-1","imp":[{"id":"i1","banner":{"w":300,"h":250}}],"device":{"geo":{"country":"USA"}},"tmax":500}"#;
const REQ_NOBID: &str = r#"{"id":"t-2","imp":[{"id":"i1","banner":{"w":160,"h":600}}],"device":{"geo":{"country":"USA"}},"tmax":500}"#;
const REQ_TEST: &str = r#"{"id":"t-3","test":1,"imp":[{"id":"i1","banner":{"w":300,"h":250}}],"device":{"geo":{"country":"USA"}},"tmax":500}"#;

const TRACE: &str = "X-Helios-Trace: 1\r\n";

fn json(r: &Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// campaign id → what the trace says of it on imp "i1" ("dropped" reason or "eligible").
fn outcomes(t: &Value) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = t["considered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let what = match e["dropped"].as_str() {
                Some(d) => d.to_owned(),
                None => format!("eligible {}", e["eligible_price_usd_micros"]),
            };
            (e["campaign"].as_u64().unwrap(), what)
        })
        .collect();
    v.sort();
    v
}

fn check(driver: &str) {
    let s = Server::start_with_campaigns(
        driver,
        SET,
        &[],
        &[("HELIOS_BIDDING_TRACE_EXCHANGES", "trusted, other-ok")],
    );
    let mut c = s.client();

    // Allowed exchange, header: a bid with the trace in ext.
    let r = c.roundtrip(&post("/openrtb2/bid/trusted", REQ.as_bytes(), TRACE));
    assert_eq!(r.status, 200, "{r:?}");
    let v = json(&r);
    assert_eq!(v["seatbid"][0]["bid"][0]["cid"], "7", "{v}");
    let t = &v["ext"]["helios_trace"];
    assert_eq!(t["exchange"], "trusted");
    assert_eq!(t["campaigns_in_set"], 5);
    assert_eq!(t["bids"][0]["campaign"], 7);
    assert_eq!(t["bids"][0]["price_micros"], 2_500_000);
    assert!(t["no_bid_reason"].is_null());
    assert_eq!(
        outcomes(t),
        vec![
            (7, "eligible 2500000".to_owned()),
            (8, "country".to_owned()),
            (9, "format".to_owned()),
            (10, "inactive".to_owned()),
            (11, "outbid".to_owned()),
        ],
        "{t}"
    );
    // Request-level drops (the index) name no imp; imp-level ones name it.
    let imp_of = |id: u64| {
        t["considered"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["campaign"] == id)
            .unwrap()["imp"]
            .clone()
    };
    assert!(imp_of(8).is_null(), "{t}");
    assert_eq!(imp_of(9), "i1", "{t}");
    assert_eq!(imp_of(7), "i1", "{t}");

    // Allowed exchange, a no-bid: 200 with an empty seatbid and the reasons.
    let r = c.roundtrip(&post("/openrtb2/bid/trusted", REQ_NOBID.as_bytes(), TRACE));
    assert_eq!(r.status, 200, "{r:?}");
    let v = json(&r);
    assert_eq!(v["id"], "t-2");
    assert_eq!(v["seatbid"].as_array().unwrap().len(), 0);
    let t = &v["ext"]["helios_trace"];
    assert_eq!(t["no_bid_reason"], "no_eligible_campaign", "{t}");
    let o = outcomes(t);
    assert_eq!(o.len(), 5, "{t}");
    assert!(o.iter().all(|(_, w)| !w.starts_with("eligible")), "{t}");
    assert!(o.contains(&(8, "country".to_owned())), "{t}");
    assert!(o.contains(&(10, "inactive".to_owned())), "{t}");
    assert!(o.iter().filter(|(_, w)| w == "format").count() >= 3, "{t}");

    // The gateway's header names the exchange (root path).
    let r = c.roundtrip(&post(
        "/openrtb2/bid",
        REQ.as_bytes(),
        "X-Helios-Trace: 1\r\nX-Helios-Exchange: other-ok\r\n",
    ));
    assert_eq!(r.status, 200);
    assert!(json(&r)["ext"]["helios_trace"].is_object());

    // A test request from an allowed exchange is traced without the header.
    let r = c.roundtrip(&post("/openrtb2/bid/trusted", REQ_TEST.as_bytes(), ""));
    assert_eq!(r.status, 200);
    let v = json(&r);
    assert_eq!(v["ext"]["helios_trace"]["test"], true, "{v}");

    // Not allowed: the normal answers, no trace (a no-bid stays a bare 204).
    for (path, body, extra) in [
        ("/openrtb2/bid/stranger", REQ, TRACE),
        ("/openrtb2/bid", REQ, TRACE),
        ("/openrtb2/bid/stranger", REQ_TEST, ""),
        ("/openrtb2/bid/trusted", REQ, ""),
        (
            "/openrtb2/bid",
            REQ,
            "X-Helios-Trace: 1\r\nX-Helios-Exchange: stranger\r\n",
        ),
    ] {
        let r = c.roundtrip(&post(path, body.as_bytes(), extra));
        assert_eq!(r.status, 200, "{path} {extra}");
        let v = json(&r);
        assert!(
            v.get("ext").is_none(),
            "{path} {extra:?} must not be traced: {v}"
        );
        assert_eq!(v["seatbid"][0]["bid"][0]["cid"], "7");
    }
    let r = c.roundtrip(&post("/openrtb2/bid/stranger", REQ_NOBID.as_bytes(), TRACE));
    assert_eq!((r.status, r.body.len()), (204, 0));
    // Traced requests are counted like any other.
    assert_eq!(s.metric_eq("helios_bids_total", 8), 8);
}

#[test]
fn trace_on_demand_uring() {
    check("uring");
}

#[test]
fn trace_on_demand_epoll() {
    check("epoll");
}

#[test]
fn no_trace_unless_configured() {
    let s = Server::start_with_campaigns("uring", SET, &[], &[]);
    let mut c = s.client();
    let r = c.roundtrip(&post("/openrtb2/bid/trusted", REQ.as_bytes(), TRACE));
    assert_eq!(r.status, 200);
    assert!(json(&r).get("ext").is_none());
    let r = c.roundtrip(&post("/openrtb2/bid/trusted", REQ_NOBID.as_bytes(), TRACE));
    assert_eq!(r.status, 204);
}

#[test]
fn bad_trace_exchanges_is_a_config_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helios"))
        .env("HELIOS_BIDDING_TRACE_EXCHANGES", "ok, not ok!")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bidding.trace_exchanges"));
}

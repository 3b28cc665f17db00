//! Clicks end to end through the real `helios` binary: a creative whose markup carries the click
//! macro gets the impression's signed click URL in the bid's `adm`; that URL, as a browser (or
//! the exchange simulator) calls it, is accepted on `/notice/click` (204) and becomes a click
//! event; the same click twice has the same event id (counted once downstream); an altered
//! click URL or a billing URL on the click route is refused (400). Events go to the spool (no
//! broker here), which is read back after shutdown — the same frames Kafka would receive.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use codec::event::{Event, EventKind};
use common::*;

const CAMPAIGNS_WITH_CLICK: &str = r#"{"version":1,"campaigns":[
  {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000,
   "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],
     "adm":"<a href=\"https://shoes.example/\" ping=\"${HELIOS_CLICK_URL_HTML}\"><img src=\"https://cdn.example/a.png\"></a>"}]}]}"#;

/// The click tracker in markup, the way the exchange simulator finds it (`click_url_in_adm`):
/// from `http://` before `/notice/click?` up to a quote, with `&amp;` unescaped.
fn click_path(adm: &str) -> String {
    let at = adm
        .find("/notice/click?")
        .expect("a click URL in the markup");
    let start = adm[..at].rfind("http://").unwrap();
    let end = at + adm[at..].find('"').unwrap();
    let url = adm[start..end]
        .replace("&amp;", "&")
        .replace("${AUCTION_ID}", "auction-1");
    url[url.find("/notice/").unwrap()..].to_owned()
}

fn spooled_events(dir: &std::path::Path) -> Vec<Event> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    for p in paths {
        let data = pipeline::spool::read_segment(&p).unwrap();
        let mut pos = pipeline::spool::MAGIC.len();
        loop {
            match pipeline::spool::next_record(&data, &mut pos) {
                pipeline::spool::Next::Record(r) => {
                    for e in codec::event::frame::decode_record(r.payload).unwrap() {
                        out.push(e.unwrap());
                    }
                }
                pipeline::spool::Next::End => break,
                pipeline::spool::Next::Corrupt { offset } => {
                    panic!("corrupt spool record at {offset} in {}", p.display())
                }
            }
        }
    }
    out
}

#[test]
fn click_url_in_markup_is_signed_accepted_once_per_impression_and_emitted() {
    let spool = std::env::temp_dir().join(format!("helios-spool-click-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let mut s = Server::start_with_campaigns(
        "uring",
        CAMPAIGNS_WITH_CLICK,
        &[],
        // Events are spooled, read back below.
        &spool_only_events(spool.to_str().unwrap()),
    );
    let mut c = s.client();
    let r = c.roundtrip(&post("/openrtb2/bid/adx", BID.as_bytes(), ""));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let bid = &v["seatbid"][0]["bid"][0];
    let adm = bid["adm"].as_str().unwrap();
    assert!(!adm.contains("${HELIOS_CLICK_URL"), "macro expanded: {adm}");
    assert!(adm.starts_with("<a href=\"https://shoes.example/\" ping=\"http://"));
    assert!(adm.contains("&amp;"), "HTML form escapes &: {adm}");
    let path = click_path(adm);
    assert!(path.contains("k=c&"), "{path}");

    // The click, and the same click again (a double click, a retried beacon).
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes();
    assert_eq!(c.roundtrip(&get(&path)).status, 204);
    assert_eq!(c.roundtrip(&get(&path)).status, 204);
    // Altered (another campaign) and a billing URL on the click route: refused.
    let altered = path.replace("&c=7&", "&c=8&");
    assert_ne!(altered, path);
    let r = c.roundtrip(&get(&altered));
    assert_eq!(r.status, 400);
    let burl = bid["burl"]
        .as_str()
        .unwrap()
        .replace("${AUCTION_PRICE}", "2");
    let bq = burl.split_once('?').unwrap().1;
    assert_eq!(
        c.roundtrip(&get(&format!("/notice/click?{bq}"))).status,
        400,
        "a billing URL is not a click URL"
    );
    assert_eq!(s.metric_eq("helios_notices_total", 2), 2);
    assert!(eventually(|| s.metric_with(
        "helios_notices_rejected_total",
        "reason=\"bad_signature\""
    ) == 1));
    assert_eq!(
        s.metric_with("helios_notices_rejected_total", "reason=\"kind_mismatch\""),
        1
    );

    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let events = spooled_events(&spool);
    let bids: Vec<&Event> = events.iter().filter(|e| e.kind == EventKind::Bid).collect();
    let clicks: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Click)
        .collect();
    assert_eq!(bids.len(), 1, "{events:?}");
    assert_eq!(clicks.len(), 2, "{events:?}");
    assert_eq!(
        clicks[0].event_id, clicks[1].event_id,
        "one id per impression's click"
    );
    assert_ne!(clicks[0].event_id, bids[0].event_id);
    for k in clicks {
        assert_eq!((k.campaign_id, k.creative_id, k.advertiser_id), (7, 71, 70));
        assert_eq!(
            k.trace_id, bids[0].trace_id,
            "the click carries the bid's trace id"
        );
        assert_eq!(k.request_id.as_str(), "req-1");
        assert_eq!(k.exchange.as_str(), "adx");
        assert_eq!(k.bid_ts_unix_ns, bids[0].ts_unix_ns);
    }
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn markup_without_the_macro_is_sent_unchanged() {
    let s = Server::start("uring", &[], &[]);
    let r = s
        .client()
        .roundtrip(&post("/openrtb2/bid", BID.as_bytes(), ""));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["seatbid"][0]["bid"][0]["adm"], "<a>ad</a>");
}

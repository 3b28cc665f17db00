//! Bytes in → bytes out tests of the sans-IO core.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use codec::event::{Event, EventKind, NoBidReason};
use codec::response::parsed;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

use super::*;
use crate::events::EventSink;

const SET: &str = r#"{"version":1,"campaigns":[
  {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000,
   "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],"adm":"<a href=\"x\">ad</a>"}]}]}"#;

const BID: &str = r#"{"id":"req-1","imp":[{"id":"i1","banner":{"w":300,"h":250}}],"tmax":100}"#;
const NOBID: &str = r#"{"id":"req-2","imp":[{"id":"i1","banner":{"w":728,"h":90}}]}"#;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<Event>>>);
impl EventSink for Shared {
    fn emit(&mut self, e: &Event) {
        self.0.lock().unwrap().push(*e);
    }
}

fn cfg() -> CoreConfig {
    CoreConfig {
        core_id: 3,
        node: "node-a".into(),
        limits: Limits {
            max_header: 8192,
            max_body: 65536,
        },
        max_inflated_body: 256 * 1024,
        null_mode: false,
        default_tmax_ms: 100,
        margin_ms: 10,
        shed_queue_pct: 25,
        shed_interval: Duration::from_millis(100),
        queue_target: Duration::ZERO,
        turn_budget: Duration::ZERO,
        out_high_water: 256 * 1024,
        seat: "helios".into(),
        vendor_id: 1,
        conn_in_capacity: 4096,
        conn_out_capacity: 4096,
        notice_key: b"test-key".to_vec(),
        notice_base: "http://bidder.test:8080".into(),
        notice_late_window: Duration::from_secs(3600),
        trace_exchanges: vec!["trusted".into()],
    }
}

struct T {
    core: Core,
    conn: Conn,
    events: Shared,
    mock: Arc<quanta::Mock>,
}

fn with(cfg: CoreConfig) -> T {
    with_profiles(cfg, None)
}

fn with_profiles(cfg: CoreConfig, profiles: Option<profile_cache::Reader>) -> T {
    let (clock, mock) = Clock::mock();
    mock.increment(Duration::from_secs(1));
    let events = Shared::default();
    let core = Core::new(
        cfg,
        CompiledSet::parse(SET.as_bytes()).unwrap(),
        Box::new(events.clone()),
        clock,
        Arc::new(Published::new(3)),
        profiles,
    );
    let conn = core.new_conn();
    T {
        core,
        conn,
        events,
        mock,
    }
}

impl T {
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.core.begin_turn();
        assert!(self.conn.push(bytes));
        self.core.on_input(&mut self.conn);
        std::mem::take(&mut self.conn.out)
    }
}

fn post(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Splits a byte stream of responses into (status, headers, body) triples.
fn responses(mut b: &[u8]) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut h);
        let n = match r.parse(b).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial response"),
        };
        let len = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&b[..n]).into_owned();
        out.push((r.code.unwrap(), head, b[n..n + len].to_vec()));
        b = &b[n + len..];
    }
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn bids_with_a_full_response_and_an_event() {
    let mut t = with(cfg());
    let r = responses(&t.send(&post("/openrtb2/bid/adx", BID.as_bytes(), "")));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 200);
    assert!(r[0].1.contains("X-Openrtb-Version: 2.6"));
    let resp: parsed::BidResponse = serde_json::from_slice(&r[0].2).unwrap();
    assert_eq!(resp.id, "req-1");
    let b = &resp.seatbid[0].bid[0];
    assert_eq!(resp.seatbid[0].seat.as_deref(), Some("helios"));
    assert_eq!(b.impid, "i1");
    assert_eq!(b.price, 2.5);
    assert_eq!(b.crid.as_deref(), Some("71"));
    assert_eq!(b.cid.as_deref(), Some("7"));
    assert_eq!(b.adomain, vec!["shoes.example".to_owned()]);
    assert_eq!((b.w, b.h), (Some(300), Some(250)));
    assert_eq!(b.adm.as_deref(), Some("<a href=\"x\">ad</a>"));
    let ev = t.events.0.lock().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::Bid);
    assert_eq!(ev[0].campaign_id, 7);
    assert_eq!(ev[0].core, 3);
    assert_eq!(ev[0].exchange.as_str(), "adx");
    assert_eq!(ev[0].request_id.as_str(), "req-1");
    assert_eq!(ev[0].bid_price_micros, 2_500_000);
    let m = t.core.metrics();
    assert_eq!((m.bid_requests, m.bids, m.imp_bids), (1, 1, 1));
    assert_eq!(m.status_count(200), 1);
    assert_eq!(m.latency_ns.len(), 1);
}

#[test]
fn no_bid_is_204_with_reason_counted() {
    let mut t = with(cfg());
    let out = t.send(&post("/openrtb2/bid", NOBID.as_bytes(), ""));
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    let m = t.core.metrics();
    assert_eq!(
        m.no_bids[NoBidReason::NoEligibleCampaign.code() as usize],
        1
    );
    let ev = t.events.0.lock().unwrap();
    assert_eq!(ev[0].kind, EventKind::NoBid);
    assert_eq!(ev[0].reason, NoBidReason::NoEligibleCampaign.code());
    assert_eq!(ev[0].request_id.as_str(), "req-2");
}

/// Ids that could make a notice URL longer than the buffers sized at start: refused with 400
/// and the reason before the decision (nothing reserved, nothing emitted but the counter), the
/// connection kept; an id just under the bound still bids, with URLs that fit and verify.
#[test]
fn ids_too_long_for_a_notice_url_are_refused_before_the_decision() {
    let mut t = with(cfg());
    let long_id = "x".repeat(MAX_NOTICE_PARAMS / 3);
    let body =
        format!(r#"{{"id":"{long_id}","imp":[{{"id":"i1","banner":{{"w":300,"h":250}}}}]}}"#);
    let r = responses(&t.send(&post("/openrtb2/bid", body.as_bytes(), "")));
    assert_eq!(r[0].0, 400);
    assert!(String::from_utf8_lossy(&r[0].2).contains("too long for a notice URL"));
    assert!(!t.conn.wants_close());
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::InvalidRequest.code() as usize],
        1
    );
    assert!(t.events.0.lock().unwrap().is_empty());
    // Percent-encoding triples a byte: 500 bytes of id that all need it still fit.
    let cap = (t.core.b.urls.capacity(), t.core.b.notice_params.capacity());
    let ok_id = "%".repeat(500);
    let body = format!(r#"{{"id":"{ok_id}","imp":[{{"id":"i1","banner":{{"w":300,"h":250}}}}]}}"#);
    let r = responses(&t.send(&post("/openrtb2/bid", body.as_bytes(), "")));
    assert_eq!(r[0].0, 200);
    let resp: parsed::BidResponse = serde_json::from_slice(&r[0].2).unwrap();
    let nurl = resp.seatbid[0].bid[0].nurl.clone().unwrap();
    assert!(nurl.contains(&"%25".repeat(500)));
    // The buffers sized at start did not grow.
    assert_eq!(
        (t.core.b.urls.capacity(), t.core.b.notice_params.capacity()),
        cap
    );
}

#[test]
fn invalid_request_is_400_with_the_codec_reason_and_keeps_the_connection() {
    let mut t = with(cfg());
    let mut bytes = post("/openrtb2/bid", br#"{"imp":[{"id":"1","banner":{}}]}"#, "");
    bytes.extend(post("/openrtb2/bid", b"{not json", ""));
    bytes.extend(post("/openrtb2/bid", BID.as_bytes(), ""));
    let r = responses(&t.send(&bytes));
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].0, 400);
    assert_eq!(r[0].2, b"missing field: id\n");
    assert_eq!(r[1].0, 400);
    assert!(String::from_utf8_lossy(&r[1].2).starts_with("invalid OpenRTB JSON"));
    assert_eq!(r[2].0, 200);
    assert!(!t.conn.wants_close());
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::InvalidRequest.code() as usize],
        2
    );
}

#[test]
fn pipelined_requests_are_answered_in_order_whatever_the_split() {
    let mut stream = post("/openrtb2/bid", BID.as_bytes(), "");
    stream.extend(post("/openrtb2/bid", NOBID.as_bytes(), ""));
    stream.extend(b"GET /notice/win?p=1 HTTP/1.1\r\n\r\n");
    stream.extend(post(
        "/openrtb2/bid",
        BID.as_bytes(),
        "Connection: close\r\n",
    ));
    let whole = {
        let mut t = with(cfg());
        t.send(&stream)
    };
    let codes: Vec<u16> = responses(&whole).iter().map(|r| r.0).collect();
    // The notice is unsigned: refused (400), and the connection goes on.
    assert_eq!(codes, [200, 204, 400, 200]);
    for chunk in [1, 7, 64, 333] {
        let mut t = with(cfg());
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            got.extend(t.send(piece));
        }
        // Same answers (notice URLs carry times and ids, so compare statuses and sizes).
        let shape = |b: &[u8]| {
            responses(b)
                .iter()
                .map(|r| (r.0, r.2.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&got), shape(&whole), "chunk {chunk}");
        assert!(t.conn.wants_close());
        assert!(!t.conn.has_pending_input());
    }
}

#[test]
fn gzip_bodies() {
    let mut t = with(cfg());
    let r = responses(&t.send(&post(
        "/openrtb2/bid",
        &gz(BID.as_bytes()),
        "Content-Encoding: gzip\r\n",
    )));
    assert_eq!(r[0].0, 200);
    assert_eq!(t.core.metrics().gzip_bodies, 1);
    let r = responses(&t.send(&post(
        "/openrtb2/bid",
        b"plain",
        "Content-Encoding: gzip\r\n",
    )));
    assert_eq!(
        (r[0].0, r[0].2.as_slice()),
        (400, &b"gzip: bad header\n"[..])
    );
    // A bomb: small on the wire, past the inflated limit.
    let mut c = cfg();
    c.max_inflated_body = 1000;
    let mut t = with(c);
    let bomb = gz(&vec![b' '; 50_000]);
    assert!(bomb.len() < 1000);
    let r = responses(&t.send(&post("/openrtb2/bid", &bomb, "Content-Encoding: gzip\r\n")));
    assert_eq!(r[0].0, 413);
    assert!(!t.conn.wants_close());
}

#[test]
fn expect_100_continue() {
    let mut t = with(cfg());
    let full = post("/openrtb2/bid", BID.as_bytes(), "Expect: 100-continue\r\n");
    let head_len = full.len() - BID.len();
    assert_eq!(t.send(&full[..head_len]), http::CONTINUE);
    // More of the body: no second 100.
    assert_eq!(t.send(&full[head_len..head_len + 5]), b"");
    let r = responses(&t.send(&full[head_len + 5..]));
    assert_eq!(r[0].0, 200);
    // Whole request at once: no 100 at all.
    let r = responses(&t.send(&full));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 200);
}

#[test]
fn limits_answer_and_close() {
    for (bytes, status) in [
        (
            {
                let mut v = b"POST /openrtb2/bid HTTP/1.1\r\nX-Big: ".to_vec();
                v.resize(9000, b'a');
                v
            },
            431,
        ),
        (
            b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n"
                .to_vec(),
            413,
        ),
        (b"BLAH\x01 / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            501,
        ),
    ] {
        let mut t = with(cfg());
        let mut s = bytes.clone();
        s.extend(post("/openrtb2/bid", BID.as_bytes(), ""));
        let r = responses(&t.send(&s));
        assert_eq!(r.len(), 1, "nothing after a refusal is answered");
        assert_eq!(r[0].0, status);
        assert!(r[0].1.contains("Connection: close"));
        assert!(t.conn.wants_close());
        assert!(!t.conn.has_pending_input());
        assert_eq!(t.core.metrics().status_count(status), 1);
    }
}

#[test]
fn exact_limits_are_accepted() {
    let mut c = cfg();
    c.limits.max_body = BID.len();
    let mut t = with(c);
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", BID.as_bytes(), "")))[0].0,
        200
    );
}

#[test]
fn routes_and_methods() {
    let mut t = with(cfg());
    let mut s = b"GET /openrtb2/bid HTTP/1.1\r\n\r\n".to_vec();
    s.extend(b"GET /nope HTTP/1.1\r\n\r\n");
    s.extend(b"PUT /notice/loss?a=1 HTTP/1.1\r\n\r\n");
    s.extend(b"GET /notice/win HTTP/1.1\r\n\r\n");
    s.extend(b"GET /notice/billing?p=1.2&r=x HTTP/1.1\r\n\r\n");
    s.extend(post("/notice/loss", b"r=x&l=102", ""));
    let r = responses(&t.send(&s));
    let codes: Vec<u16> = r.iter().map(|r| r.0).collect();
    assert_eq!(codes, [405, 404, 405, 400, 400, 400]);
    assert!(r[0].1.contains("Allow: POST"));
    assert_eq!(r[4].2, b"notice has no signature\n");
    t.core.publish();
    let snap = t.core.published.snapshot.lock().unwrap();
    assert_eq!(snap.notices, [0, 0, 0, 0]);
    assert_eq!(snap.notices_rejected[0], 3, "unsigned, counted by reason");
}

#[test]
fn deadline_means_no_bid_not_a_late_bid() {
    let mut t = with(cfg());
    t.core.begin_turn();
    // 95 ms pass between the bytes' arrival and the decision; tmax 100 − margin 10 = 90 ms.
    t.mock.increment(Duration::from_millis(95));
    assert!(t.conn.push(&post("/openrtb2/bid", BID.as_bytes(), "")));
    t.core.on_input(&mut t.conn);
    assert_eq!(t.conn.out, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::Deadline.code() as usize],
        1
    );
    // tmax smaller than the margin: never time to bid.
    let tiny = BID.replace("\"tmax\":100", "\"tmax\":5");
    let out = t.send(&post("/openrtb2/bid", tiny.as_bytes(), ""));
    assert_eq!(responses(&out)[0].0, 204);
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::Deadline.code() as usize],
        2
    );
    // Default tmax when absent: 100 ms; 50 ms in, still fine.
    let no_tmax = BID.replace(",\"tmax\":100", "");
    t.core.begin_turn();
    t.mock.increment(Duration::from_millis(50));
    t.conn.out.clear();
    assert!(t.conn.push(&post("/openrtb2/bid", no_tmax.as_bytes(), "")));
    t.core.on_input(&mut t.conn);
    assert_eq!(responses(&t.conn.out)[0].0, 200);
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl T {
    /// One turn in which `bytes` arrive with a kernel stamp `age` before the turn.
    fn send_aged(&mut self, bytes: &[u8], age: Duration) -> Vec<u8> {
        self.conn.set_rx_stamp(unix_ns() - age.as_nanos() as u64);
        self.send(bytes)
    }

    fn shed(&self, r: ShedReason) -> u64 {
        self.core.metrics().shed[r as usize]
    }
}

#[test]
fn age_counts_from_the_kernel_stamp_and_expired_requests_are_shed_undecoded() {
    let mut t = with(cfg());
    // Waited 5 ms in the socket buffer: decided (budget 100 − 10 = 90 ms).
    let out = t.send_aged(
        &post("/openrtb2/bid", BID.as_bytes(), ""),
        Duration::from_millis(5),
    );
    assert_eq!(responses(&out)[0].0, 200);
    // Waited 95 ms before the loop read it: past its budget, 204 `deadline` at once — the body
    // is not decoded (this one is not even valid JSON past `tmax`; decoded, it would be 400).
    let broken = br#"{"tmax":100,"id": oops"#;
    let out = t.send_aged(
        &post("/openrtb2/bid", broken, ""),
        Duration::from_millis(95),
    );
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(t.shed(ShedReason::Expired), 1);
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::Deadline.code() as usize],
        1
    );
    // The request's own tmax counts: 95 ms of a 250 ms tmax is fine.
    let long = BID.replace("\"tmax\":100", "\"tmax\":250");
    let out = t.send_aged(
        &post("/openrtb2/bid", long.as_bytes(), ""),
        Duration::from_millis(95),
    );
    assert_eq!(responses(&out)[0].0, 200);
    // Without a stamp (0), age counts from the turn: the same request is decided.
    t.conn.set_rx_stamp(0);
    let out = t.send(&post("/openrtb2/bid", BID.as_bytes(), ""));
    assert_eq!(responses(&out)[0].0, 200);
    // A stamp in the future (a realtime clock step) is no age either.
    let out = t.send_aged(&post("/openrtb2/bid", BID.as_bytes(), ""), Duration::ZERO);
    assert_eq!(responses(&out)[0].0, 200);
    t.conn.set_rx_stamp(unix_ns() + 5_000_000_000);
    let out = t.send(&post("/openrtb2/bid", BID.as_bytes(), ""));
    assert_eq!(responses(&out)[0].0, 200);
    // The service time recorded counts from the stamp: a 60 ms-old request bid on.
    let before = t.core.metrics().latency_ns.len();
    let out = t.send_aged(
        &post("/openrtb2/bid", BID.as_bytes(), ""),
        Duration::from_millis(60),
    );
    assert_eq!(responses(&out)[0].0, 200);
    assert_eq!(t.core.metrics().latency_ns.len(), before + 1);
    assert!(t.core.metrics().latency_ns.max() >= 59_000_000);
}

#[test]
fn a_standing_queue_sheds_old_requests_until_it_drains() {
    let mut t = with(cfg());
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    // A whole interval in which every request waited 40 ms (44% of 90 ms): all decided.
    for _ in 0..3 {
        let out = t.send_aged(&req, Duration::from_millis(40));
        assert_eq!(responses(&out)[0].0, 200);
        t.mock.increment(Duration::from_millis(40));
    }
    // The next interval: requests older than 25% of their budget are answered 204 at once.
    let out = t.send_aged(&req, Duration::from_millis(30));
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(t.shed(ShedReason::Queue), 1);
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::Overloaded.code() as usize],
        1
    );
    // Young ones are still decided.
    let out = t.send_aged(&req, Duration::from_millis(5));
    assert_eq!(responses(&out)[0].0, 200);
    // That fresh request shows the queue drained: the interval after sheds nothing but
    // expired requests.
    t.mock.increment(Duration::from_millis(100));
    let out = t.send_aged(&req, Duration::from_millis(40));
    assert_eq!(responses(&out)[0].0, 200);
    assert_eq!(t.shed(ShedReason::Queue), 1);
}

#[test]
fn with_standing_queue_shedding_off_only_expired_requests_are_shed() {
    let mut c = cfg();
    c.shed_queue_pct = 0;
    let mut t = with(c);
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    for _ in 0..4 {
        let out = t.send_aged(&req, Duration::from_millis(60));
        assert_eq!(responses(&out)[0].0, 200);
        t.mock.increment(Duration::from_millis(60));
    }
    let out = t.send_aged(&req, Duration::from_millis(91));
    assert_eq!(responses(&out)[0].0, 204);
    assert_eq!(t.shed(ShedReason::Expired), 1);
    assert_eq!(t.shed(ShedReason::Queue), 0);
}

#[test]
fn overload_time_budget_per_turn() {
    let mut c = cfg();
    c.turn_budget = Duration::from_millis(1);
    let mut t = with(c);
    t.core.begin_turn();
    // The first request of a turn is always decided, however long the turn has run.
    t.mock.increment(Duration::from_millis(3));
    assert!(t.conn.push(&post("/openrtb2/bid", BID.as_bytes(), "")));
    t.core.on_input(&mut t.conn);
    // Later in the same turn, past its budget: answered 204 at once.
    let mut s = Vec::new();
    for _ in 0..2 {
        s.extend(post("/openrtb2/bid", BID.as_bytes(), ""));
    }
    assert!(t.conn.push(&s));
    t.core.on_input(&mut t.conn);
    let codes: Vec<u16> = responses(&std::mem::take(&mut t.conn.out))
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(codes, [200, 204, 204]);
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::Overloaded.code() as usize],
        2
    );
    assert_eq!(t.core.metrics().shed[ShedReason::TurnBudget as usize], 2);
    // A new turn within its budget decides them all.
    let codes: Vec<u16> = responses(&t.send(&s)).iter().map(|r| r.0).collect();
    assert_eq!(codes, [200, 200]);
}

#[test]
fn null_mode_answers_204_without_decoding() {
    let mut c = cfg();
    c.null_mode = true;
    let mut t = with(c);
    let out = t.send(&post("/openrtb2/bid", b"not even json", ""));
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert!(t.events.0.lock().unwrap().is_empty());
    assert_eq!(t.core.metrics().bid_requests, 1);
}

#[test]
fn not_ready_and_draining() {
    let mut t = with(cfg());
    t.core.set_ready(false);
    let out = t.send(&post("/openrtb2/bid", BID.as_bytes(), ""));
    assert_eq!(responses(&out)[0].0, 204);
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::NotReady.code() as usize],
        1
    );
    t.core.set_ready(true);
    t.core.set_draining();
    let r = responses(&t.send(&post("/openrtb2/bid", BID.as_bytes(), "")));
    assert_eq!(r[0].0, 200);
    assert!(r[0].1.contains("Connection: close"));
    assert!(t.conn.wants_close());
}

#[test]
fn http10_closes_after_the_answer() {
    let mut t = with(cfg());
    let s = format!(
        "POST /openrtb2/bid HTTP/1.0\r\nContent-Length: {}\r\n\r\n{BID}",
        BID.len()
    );
    let r = responses(&t.send(s.as_bytes()));
    assert_eq!(r[0].0, 200);
    assert!(t.conn.wants_close());
}

#[test]
fn backpressure_holds_pipelined_requests_until_output_is_sent() {
    let mut c = cfg();
    c.out_high_water = 10;
    let mut t = with(c);
    let mut s = Vec::new();
    for _ in 0..3 {
        s.extend(post("/openrtb2/bid", NOBID.as_bytes(), ""));
    }
    let mut n = 0;
    let mut out = t.send(&s);
    while !out.is_empty() {
        n += responses(&out).len();
        t.core.begin_turn();
        t.core.on_input(&mut t.conn);
        out = std::mem::take(&mut t.conn.out);
    }
    assert_eq!(n, 3);
}

#[test]
fn input_bound_refuses_more() {
    let t = with(cfg());
    let mut conn = t.core.new_conn();
    let max = t.core.config().max_conn_input();
    assert!(conn.push(&vec![b'a'; max]));
    assert!(!conn.push(b"x"));
    assert_eq!(conn.input_room(), 0);
}

#[test]
fn slow_client_gets_408() {
    let mut t = with(cfg());
    assert_eq!(t.send(b"POST /openrtb2/bid HTTP/1.1\r\nContent-Le"), b"");
    assert!(t.conn.has_pending_input());
    t.core.timeout(&mut t.conn);
    assert_eq!(responses(&t.conn.out)[0].0, 408);
    assert!(t.conn.wants_close());
}

#[test]
fn publish_feeds_the_admin_copy() {
    let mut t = with(cfg());
    t.send(&post("/openrtb2/bid", BID.as_bytes(), ""));
    t.core.publish();
    let p = t.core.published.clone();
    let s = p.snapshot.lock().unwrap();
    assert_eq!(s.bids, 1);
    assert_eq!(s.latency_ns.len(), 1);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                    split in 1usize..64) {
        let mut t = with(cfg());
        for piece in data.chunks(split) {
            t.core.begin_turn();
            if !t.conn.push(piece) { break; }
            t.core.on_input(&mut t.conn);
            t.conn.out.clear();
            if t.conn.wants_close() { break; }
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
                                    gzip in proptest::bool::ANY) {
        let mut t = with(cfg());
        let extra = if gzip { "Content-Encoding: gzip\r\n" } else { "" };
        let r = responses(&t.send(&post("/openrtb2/bid", &body, extra)));
        proptest::prop_assert_eq!(r.len(), 1);
        proptest::prop_assert!(matches!(r[0].0, 200 | 204 | 400 | 413));
    }
}

/// Splits "http://host:port/path?query" into (path, query).
fn path_and_query(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://bidder.test:8080").unwrap();
    rest.split_once('?').unwrap()
}

#[test]
fn bids_carry_signed_notice_urls_that_verify_once_filled_in() {
    let mut t = with(cfg());
    let r = responses(&t.send(&post("/openrtb2/bid/adx", BID.as_bytes(), "")));
    let resp: parsed::BidResponse = serde_json::from_slice(&r[0].2).unwrap();
    let b = &resp.seatbid[0].bid[0];
    let nurl = b.nurl.as_deref().unwrap();
    let burl = b.burl.as_deref().unwrap();
    let lurl = b.lurl.as_deref().unwrap();
    assert!(nurl.starts_with("http://bidder.test:8080/notice/win?"));
    assert!(nurl.contains("${AUCTION_PRICE}"));
    assert!(burl.starts_with("http://bidder.test:8080/notice/billing?"));
    assert!(lurl.starts_with("http://bidder.test:8080/notice/loss?"));
    let bid_trace = t.events.0.lock().unwrap()[0].trace_id;
    // The exchange fills in the macros and calls the win URL.
    let filled = nurl
        .replace("${AUCTION_PRICE}", "1.75")
        .replace("${AUCTION_CURRENCY}", "USD")
        .replace("${AUCTION_ID}", "a1")
        .replace("${AUCTION_IMP_ID}", "i1");
    let (path, query) = path_and_query(&filled);
    let get = format!("GET {path}?{query} HTTP/1.1\r\n\r\n");
    assert_eq!(responses(&t.send(get.as_bytes()))[0].0, 204);
    assert_eq!(responses(&t.send(get.as_bytes()))[0].0, 204);
    {
        let ev = t.events.0.lock().unwrap();
        let wins: Vec<&Event> = ev.iter().filter(|e| e.kind == EventKind::Win).collect();
        assert_eq!(wins.len(), 2);
        assert_eq!(wins[0].campaign_id, 7);
        assert_eq!(wins[0].clear_price_micros, 1_750_000);
        assert_eq!(
            wins[0].trace_id, bid_trace,
            "the trace id goes from the bid to the win"
        );
        assert_eq!(
            wins[0].event_id, wins[1].event_id,
            "a repeated notice has the same id"
        );
    }
    // Altered (our price changed) → rejected.
    let forged = get.replace("&p=2500000", "&p=9500000");
    assert_ne!(forged, get);
    let r = responses(&t.send(forged.as_bytes()));
    assert_eq!(r[0].0, 400);
    assert!(String::from_utf8_lossy(&r[0].2).contains("signature"));
    // A clearing price above our bid → rejected.
    let high = get.replace("ap=1.75", "ap=3.5");
    assert_eq!(responses(&t.send(high.as_bytes()))[0].0, 400);
    t.core.publish();
    let snap = t.core.published.snapshot.lock().unwrap();
    assert_eq!(snap.notices[0], 2);
    assert_eq!(snap.notices_rejected.iter().sum::<u64>(), 2);
}

fn profile_store(user: &str) -> (profile_cache::Store, profile_cache::Reader) {
    let (mut store, reader) = profile_cache::Store::new(16, 60_000);
    let mut p = profile_cache::ProfileData {
        user_id: user.into(),
        segments: vec![(42, 900)],
        ..Default::default()
    };
    store.upsert(&mut p).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    store.mark_synced(now_ms);
    (store, reader)
}

#[test]
fn personal_data_only_with_a_fresh_replica_and_no_privacy_signal() {
    let (_store, reader) = profile_store("u-1");
    let mut t = with_profiles(cfg(), Some(reader));
    let with_user = BID.replace("\"tmax\":100", "\"tmax\":100,\"user\":{\"id\":\"u-1\"}");
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", with_user.as_bytes(), "")))[0].0,
        200
    );
    let gdpr = with_user.replace("\"tmax\":100", "\"tmax\":100,\"regs\":{\"gdpr\":1}");
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", gdpr.as_bytes(), "")))[0].0,
        200
    );
    let coppa = with_user.replace("\"tmax\":100", "\"tmax\":100,\"regs\":{\"coppa\":1}");
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", coppa.as_bytes(), "")))[0].0,
        200
    );
    let ev = t.events.0.lock().unwrap();
    use codec::event::flags::CONTEXTUAL_ONLY;
    assert_eq!(ev[0].user_id.as_str(), "u-1");
    assert_eq!(ev[0].flags & CONTEXTUAL_ONLY, 0);
    for e in &ev[1..3] {
        assert_eq!(e.user_id.as_str(), "", "no user id without consent");
        assert_ne!(e.flags & CONTEXTUAL_ONLY, 0);
    }
    drop(ev);
    t.core.publish();
    let lag = t.core.published.snapshot.lock().unwrap().profile_lag_ms;
    assert!(lag < 60_000, "{lag}");
}

#[test]
fn a_stale_or_unloaded_replica_means_contextual_only() {
    let (_store, reader) = profile_cache::Store::new(16, 60_000); // never loaded
    let mut t = with_profiles(cfg(), Some(reader));
    let with_user = BID.replace("\"tmax\":100", "\"tmax\":100,\"user\":{\"id\":\"u-1\"}");
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", with_user.as_bytes(), "")))[0].0,
        200
    );
    let ev = t.events.0.lock().unwrap();
    assert_ne!(ev[0].flags & codec::event::flags::CONTEXTUAL_ONLY, 0);
    drop(ev);
    t.core.publish();
    assert_eq!(
        t.core.published.snapshot.lock().unwrap().profile_lag_ms,
        u64::MAX
    );
}

#[test]
fn a_billing_notice_counts_towards_the_frequency_cap_on_this_core_at_once() {
    const CAPPED: &str = r#"{"version":1,"campaigns":[
      {"id":9,"advertiser_id":90,"status":"active","bid_cpm_micros":2000000,"total_budget_micros":1000000000,
       "frequency_cap":{"impressions":1,"window_s":3600},
       "creatives":[{"id":91,"format":{"type":"banner","w":300,"h":250},"adm":"<a/>"}]}]}"#;
    let mut t = with(cfg());
    t.core
        .install(CompiledSet::parse(CAPPED.as_bytes()).unwrap());
    let req = BID.replace("\"tmax\":100", "\"tmax\":100,\"user\":{\"id\":\"u-9\"}");
    let r = responses(&t.send(&post("/openrtb2/bid", req.as_bytes(), "")));
    assert_eq!(r[0].0, 200);
    let resp: parsed::BidResponse = serde_json::from_slice(&r[0].2).unwrap();
    let burl = resp.seatbid[0].bid[0].burl.clone().unwrap();
    assert!(
        burl.contains("&u=u-9"),
        "the billing URL carries the user (consent given)"
    );
    let filled = burl
        .replace("${AUCTION_PRICE}", "1.5")
        .replace("${AUCTION_CURRENCY}", "USD")
        .replace("${AUCTION_ID}", "a")
        .replace("${AUCTION_IMP_ID}", "i1");
    let (path, query) = path_and_query(&filled);
    let get = format!("GET {path}?{query} HTTP/1.1\r\n\r\n");
    assert_eq!(responses(&t.send(get.as_bytes()))[0].0, 204);
    // Capped now: the same user gets no bid; another user still does.
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", req.as_bytes(), "")))[0].0,
        204
    );
    assert_eq!(
        t.core.metrics().no_bids[NoBidReason::FrequencyCapped.code() as usize],
        1
    );
    let other = req.replace("u-9", "u-10");
    assert_eq!(
        responses(&t.send(&post("/openrtb2/bid", other.as_bytes(), "")))[0].0,
        200
    );
}

/// A core whose standing-queue rule has CoDel's absolute 5 ms target (the default), after one
/// whole interval in which every request had waited `age` (decided: not yet shedding).
fn standing_after(age: Duration) -> T {
    let mut c = cfg();
    c.queue_target = Duration::from_millis(5);
    let mut t = with(c);
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    for _ in 0..3 {
        let out = t.send_aged(&req, age);
        assert_eq!(responses(&out)[0].0, 200);
        t.mock.increment(Duration::from_millis(40));
    }
    t
}

#[test]
fn with_the_absolute_target_a_queue_of_young_requests_is_shed_decisively() {
    // Every request of the interval waited 8 ms of a 90 ms budget: under the 25% share, but
    // the core did not drain its queue once.
    let mut t = standing_after(Duration::from_millis(8));
    t.core.begin_turn();
    assert!(t.core.shedding());
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    let out = t.send_aged(&req, Duration::from_millis(6));
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(t.shed(ShedReason::Queue), 1);
    // A request under the target is still decided.
    let out = t.send_aged(&req, Duration::from_millis(3));
    assert_eq!(responses(&out)[0].0, 200);
}

#[test]
fn the_shed_pass_answers_shed_requests_at_once_and_leaves_the_rest_for_the_turn() {
    let mut t = standing_after(Duration::from_millis(8));
    t.core.begin_turn();
    assert!(t.core.shedding());
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    // Two old requests, then a fresh one, pipelined on one connection (one stamp: the last
    // segment's; here all three arrived 7 ms ago, so all are old).
    let mut three = req.repeat(3);
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 7_000_000);
    assert!(t.conn.push(&three));
    t.core.shed_input(&mut t.conn);
    assert_eq!(
        std::mem::take(&mut t.conn.out),
        b"HTTP/1.1 204 No Content\r\n\r\n".repeat(3)
    );
    assert!(!t.conn.has_pending_input());
    assert_eq!(t.shed(ShedReason::Queue), 3);
    assert_eq!(t.core.metrics().bid_requests, 3 + 3);
    // A young request is left alone (nothing written, nothing consumed)...
    three.truncate(req.len());
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 1_000_000);
    assert!(t.conn.push(&three));
    t.core.shed_input(&mut t.conn);
    assert!(t.conn.out.is_empty());
    assert!(t.conn.has_pending_input());
    // ...and decided by the turn's normal pass.
    t.core.on_input(&mut t.conn);
    assert_eq!(responses(&std::mem::take(&mut t.conn.out))[0].0, 200);
    // Notices, gzip bodies and partial requests are never touched by the shed pass.
    let notice = b"GET /notice/win?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 7_000_000);
    assert!(t.conn.push(notice));
    t.core.shed_input(&mut t.conn);
    assert!(t.conn.out.is_empty() && t.conn.has_pending_input());
    t.core.on_input(&mut t.conn);
    assert_eq!(responses(&std::mem::take(&mut t.conn.out))[0].0, 400);
    let gz = post(
        "/openrtb2/bid",
        &gz(BID.as_bytes()),
        "Content-Encoding: gzip\r\n",
    );
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 7_000_000);
    assert!(t.conn.push(&gz));
    t.core.shed_input(&mut t.conn);
    assert!(t.conn.out.is_empty() && t.conn.has_pending_input());
    t.core.on_input(&mut t.conn);
    assert_eq!(responses(&std::mem::take(&mut t.conn.out))[0].0, 204);
    assert!(t.conn.push(&req[..req.len() - 3]));
    t.core.shed_input(&mut t.conn);
    assert!(t.conn.out.is_empty() && t.conn.has_pending_input());
}

#[test]
fn without_a_standing_queue_the_shed_pass_sheds_only_expired_requests() {
    let mut c = cfg();
    c.queue_target = Duration::from_millis(5);
    let mut t = with(c);
    t.core.begin_turn();
    assert!(!t.core.shedding());
    let req = post("/openrtb2/bid", BID.as_bytes(), "");
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 30_000_000);
    assert!(t.conn.push(&req));
    t.core.shed_input(&mut t.conn);
    assert!(t.conn.out.is_empty(), "30 ms old, no queue: decided later");
    t.core.on_input(&mut t.conn);
    assert_eq!(responses(&std::mem::take(&mut t.conn.out))[0].0, 200);
    t.core.begin_turn();
    t.conn.set_rx_stamp(unix_ns() - 95_000_000);
    assert!(t.conn.push(&req));
    t.core.shed_input(&mut t.conn);
    assert_eq!(
        std::mem::take(&mut t.conn.out),
        b"HTTP/1.1 204 No Content\r\n\r\n"
    );
    assert_eq!(t.shed(ShedReason::Expired), 1);
}

/// Campaigns whose outcome depends on the profile: segment targeting (with a minimum weight),
/// a multiplier price, a frequency cap, and a contextual fallback.
const PROFILE_SET: &str = r#"{"version":1,"campaigns":[
  {"id":20,"advertiser_id":2,"status":"active","bid_cpm_micros":6000000,"total_budget_micros":1000000000,
   "targeting":{"segments":[42],"min_segment_weight":500},
   "creatives":[{"id":201,"format":{"type":"banner","w":300,"h":250},"adm":"<a>20</a>"}]},
  {"id":21,"advertiser_id":2,"status":"active","bid_cpm_micros":2000000,"max_cpm_micros":5000000,
   "segment_multipliers":[{"segment":43,"multiplier_bp":20000}],"total_budget_micros":1000000000,
   "creatives":[{"id":211,"format":{"type":"banner","w":300,"h":250},"adm":"<a>21</a>"}]},
  {"id":22,"advertiser_id":2,"status":"active","bid_cpm_micros":5500000,"total_budget_micros":1000000000,
   "targeting":{"segments":[44]},"frequency_cap":{"impressions":2,"window_s":86400},
   "creatives":[{"id":221,"format":{"type":"banner","w":300,"h":250},"adm":"<a>22</a>"}]},
  {"id":23,"advertiser_id":2,"status":"active","bid_cpm_micros":1000000,"total_budget_micros":1000000000,
   "targeting":{"countries":["FRA"]},
   "creatives":[{"id":231,"format":{"type":"banner","w":300,"h":250},"adm":"<a>23</a>"}]}]}"#;

/// What a decision said, from its event: kind, reason, campaign, price, user, flags.
fn outcome(e: &Event) -> (EventKind, u16, u32, i64, String, u8) {
    (
        e.kind,
        e.reason,
        e.campaign_id,
        e.bid_price_micros,
        e.user_id.as_str().to_owned(),
        e.flags,
    )
}

#[test]
fn every_profile_order_makes_the_same_decisions() {
    // 300 users: in or out of each segment, with weights around the thresholds, some with
    // impressions of the capped campaign in the current hour.
    let (mut store, reader) = profile_cache::Store::new(300, 60_000);
    let hour = (unix_ns() / 1_000_000_000 / 3600) as u32;
    for i in 0..300u32 {
        let mut p = profile_cache::ProfileData {
            user_id: format!("user-{i}"),
            ..Default::default()
        };
        if i % 2 == 0 {
            p.segments.push((42, (i * 7 % 1001) as u16));
        }
        if i % 3 == 0 {
            p.segments.push((43, (i * 13 % 1001) as u16));
        }
        if i % 5 == 0 {
            p.segments.push((44, 100));
            p.freq.push(profile_cache::FreqBucket {
                campaign: 22,
                hour,
                count: i % 4,
            });
        }
        store.upsert(&mut p).unwrap();
    }
    store.mark_synced(unix_ns() / 1_000_000);
    let orders = [
        ProfileOrder::Eager,
        ProfileOrder::Late,
        ProfileOrder::Prefetch,
        ProfileOrder::PrefetchSlot,
    ];
    let mut cores: Vec<T> = orders
        .iter()
        .map(|o| {
            let mut t = with_profiles(cfg(), Some(reader.clone()));
            t.core
                .install(CompiledSet::parse(PROFILE_SET.as_bytes()).unwrap());
            t.core.set_profile_order(*o);
            t
        })
        .collect();
    // Users present and absent, by user.id, buyeruid and device.ifa, with and without consent,
    // in and out of the country, one with a refused seat.
    let mut bodies = Vec::new();
    for i in 0..330u32 {
        let who = match i % 4 {
            0 => format!(r#""user":{{"id":"user-{i}"}}"#),
            1 => format!(r#""user":{{"buyeruid":"user-{i}"}}"#),
            2 => format!(r#""device":{{"ifa":"user-{i}","geo":{{"country":"FRA"}}}}"#),
            _ => format!(r#""user":{{"id":"user-{i}"}},"device":{{"geo":{{"country":"FRA"}}}}"#),
        };
        let regs = match i % 11 {
            3 => r#","regs":{"coppa":1}"#,
            7 => r#","regs":{"gdpr":1}"#,
            _ => "",
        };
        let seat = if i % 17 == 5 {
            r#","wseat":["other"]"#
        } else {
            ""
        };
        bodies.push(format!(
            r#"{{"id":"r-{i}","imp":[{{"id":"1","banner":{{"w":300,"h":250}}}}],"tmax":100,{who}{regs}{seat}}}"#
        ));
    }
    let mut statuses = Vec::new();
    for t in &mut cores {
        let mut s = Vec::new();
        for b in &bodies {
            let r = t.send(&post("/openrtb2/bid", b.as_bytes(), ""));
            s.push(responses(&r)[0].0);
        }
        statuses.push(s);
    }
    let events: Vec<Vec<_>> = cores
        .iter()
        .map(|t| t.events.0.lock().unwrap().iter().map(outcome).collect())
        .collect();
    assert_eq!(events[0].len(), bodies.len(), "one event per request");
    for (k, o) in orders.iter().enumerate().skip(1) {
        assert_eq!(statuses[k], statuses[0], "{o:?}: statuses");
        assert_eq!(events[k], events[0], "{o:?}: decisions");
    }
    // The profiles mattered: segment bids, multiplied prices, capped users and no-bids.
    let bids_of = |c: u32| events[0].iter().filter(|e| e.2 == c).count();
    assert!(bids_of(20) > 10 && bids_of(21) > 10 && bids_of(22) > 0);
    let prices: std::collections::BTreeSet<i64> = events[0]
        .iter()
        .filter(|e| e.2 == 21)
        .map(|e| e.3)
        .collect();
    assert!(
        prices.len() > 5,
        "multiplied prices differ per user: {prices:?}"
    );
    assert!(statuses[0].contains(&204));
    assert!(
        events[0].iter().any(|e| e.4.is_empty()),
        "some without consent"
    );
    drop(store);
}

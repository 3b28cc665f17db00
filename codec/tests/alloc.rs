//! Allocation counting: its own test binary, because it installs a `#[global_allocator]`.
//!
//! How it measures: `alloc_count::CountingAlloc` forwards to the system allocator and counts calls
//! to `alloc`, `alloc_zeroed` and `realloc` in a thread-local counter, so allocations by other test
//! threads (the harness, parallel tests) are not counted. A request is decoded, validated and
//! answered once to warm up (the response buffer grows to size), then the same work is done again
//! between two readings of this thread's counter: the difference must be 0.

use alloc_count::count;
use codec::money::{Currency, Micros};
use codec::request::BidRequest;
use codec::{Bid, BidResponse, ResponseEncoder, SeatBid, ValidRequest};

mod common;

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// What a bidding core does per request: decode, validate, answer (one bid on the first imp,
/// strings borrowed from the request).
fn serve(body: &[u8], enc: &mut ResponseEncoder) -> usize {
    // Borrowed, not moved: a `ValidRequest` is ~20 KB of inline lists.
    match &codec::decode_valid(body) {
        Ok(v) => answer(v, enc),
        Err(e) => panic!("refused: {e}"),
    }
}

fn answer(v: &ValidRequest<'_>, enc: &mut ResponseEncoder) -> usize {
    let imp = &v.req().imp[0];
    let adomain = ["shoes.example"];
    let bids = [Bid {
        id: v.id(),
        impid: imp.id.as_deref().unwrap_or_default(),
        price: v.imps()[0].floor.saturating_add(Micros(10_000)),
        adid: None,
        crid: "cr-42",
        cid: "c-7",
        adomain: &adomain,
        dealid: imp
            .pmp
            .as_ref()
            .and_then(|p| p.deals.first())
            .and_then(|d| d.id.as_deref()),
        w: imp.banner.as_ref().and_then(|b| b.w),
        h: imp.banner.as_ref().and_then(|b| b.h),
        nurl: Some("https://bid.example/notice/win?p=${AUCTION_PRICE}"),
        burl: None,
        lurl: None,
        adm: Some("<div class=\"ad\"><img src=\"https://cdn.example/42.jpg\"></div>"),
        adm_json: None,
    }];
    let seat = [SeatBid {
        seat: Some("helios"),
        bid: &bids,
    }];
    let resp = BidResponse {
        id: v.id(),
        bidid: None,
        cur: if v.accepts(Currency::USD) {
            Currency::USD
        } else {
            Currency::EUR
        },
        seatbid: &seat,
    };
    enc.encode(&resp).len()
}

/// The counter sees allocations at all (else the zero below would prove nothing).
#[test]
fn the_counter_counts_this_threads_allocations() {
    let (n, v) = count(|| Vec::<u8>::with_capacity(100));
    assert_eq!(n, 1);
    drop(v);
    let (n, _) = count(|| std::thread::spawn(|| Vec::<u8>::with_capacity(100)).join());
    // Spawning allocates on this thread; the other thread's Vec is not counted here.
    assert!(n >= 1);
    let (n, _) = count(|| "x".repeat(3));
    assert_eq!(n, 1);
}

/// Every corpus request without escapes in the fields the bidder reads: 0 allocations once warm.
#[test]
fn warm_decode_validate_encode_allocates_nothing() {
    let mut enc = ResponseEncoder::with_capacity(1024);
    let mut checked = 0;
    for (name, body) in common::corpus("valid") {
        // The one file whose decoded strings carry escapes (they must be copied).
        if name == "escapes-unicode.json" {
            continue;
        }
        let cold = serve(&body, &mut enc);
        let (n, warm) = count(|| serve(&body, &mut enc));
        assert_eq!(warm, cold);
        assert_eq!(n, 0, "{name}: {n} allocations on a warm request");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} files checked");
}

/// An escape in a decoded string costs that string's copy (and the decoder's scratch buffer);
/// one in a skipped string costs nothing.
#[test]
fn escapes_allocate_only_for_decoded_strings() {
    let mut enc = ResponseEncoder::with_capacity(1024);
    let plain = br#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}],"ext":{"n":"a\"b"}}"#;
    let escaped = br#"{"id":"r\u00e91","imp":[{"id":"1","banner":{"w":300,"h":250}}]}"#;
    serve(plain, &mut enc);
    serve(escaped, &mut enc);
    assert_eq!(count(|| serve(plain, &mut enc)).0, 0);
    // The owned copy of the string, plus the decoder's scratch buffer for unescaping.
    let (n, _) = count(|| serve(escaped, &mut enc));
    assert!(
        (1..=3).contains(&n),
        "{n} allocations for one escaped string"
    );
}

/// A refused request allocates nothing on the rule path (the error is a small enum).
#[test]
fn refused_by_a_rule_allocates_nothing() {
    let body = br#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":-1}]}"#;
    let _ = codec::decode_valid(body);
    let (n, refused) = count(|| codec::decode_valid(body).is_err());
    assert!(refused);
    assert_eq!(n, 0);
}

/// Malformed JSON: writing the error's one-line text (the 400 body, into a stack buffer as the
/// appliance does) allocates nothing. Making the error does: sonic-rs builds its message and an
/// excerpt of the input (up to ~40 allocations per malformed body, bounded here; a request that
/// parses but breaks a rule allocates nothing, above).
#[test]
fn malformed_json_message_allocates_nothing_and_the_error_a_bounded_few() {
    use std::io::Write as _;
    let bodies: [&[u8]; 4] = [
        b"{not json",
        br#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}]"#,
        br#"{"id":"r1","imp":[{"id":"1","banner":{"w":"big","h":250}}]}"#,
        br#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}]} trailing"#,
    ];
    let mut tmp = [0u8; 256];
    for b in bodies {
        let _ = codec::decode_valid(b);
        let (made, e) = count(|| codec::decode_valid(b).expect_err("malformed"));
        assert!(made <= 64, "{made} allocations making the error");
        let (n, len) = count(|| {
            let mut cur = std::io::Cursor::new(&mut tmp[..]);
            let _ = writeln!(cur, "{e}");
            cur.position() as usize
        });
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(b));
        let line = std::str::from_utf8(&tmp[..len]).unwrap();
        assert!(line.starts_with("invalid OpenRTB JSON"), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
    }
}

/// Upper bound on the size of a decoded request. Its lists are inline (no allocation), so every
/// move of a `BidRequest` copies this many bytes: keep it bounded, and borrow rather than move
/// (`match &codec::decode_valid(body)`). Raise only with a measurement (bench `move/bid_request`).
const MAX_BID_REQUEST_BYTES: usize = 24 * 1024;

#[test]
fn bid_request_stays_under_its_size_bound() {
    let n = std::mem::size_of::<BidRequest<'_>>();
    assert!(n <= MAX_BID_REQUEST_BYTES, "BidRequest is {n} bytes");
    let v = std::mem::size_of::<ValidRequest<'_>>();
    assert!(
        v <= MAX_BID_REQUEST_BYTES + 256,
        "ValidRequest is {v} bytes"
    );
}

//! Runs decode + validate + encode over corpus files a given number of times, for instruction
//! counting under callgrind (`scripts/bench-codec.sh`): run once with 1 and once with 1 + N
//! rounds and divide the difference by N, which removes start-up and file reading.
//!
//! Usage: codec_work <serde_json|sonic_rs|simd_json|codec> <rounds> <file>...

use std::hint::black_box;

use codec::money::{Currency, Micros};
use codec::request::BidRequest;
use codec::{Bid, BidResponse, ResponseEncoder, SeatBid, ValidRequest};

fn respond(v: &ValidRequest<'_>, enc: &mut ResponseEncoder) -> usize {
    let imp = &v.req().imp[0];
    let adomain = ["shoes.example"];
    let (w, h) = imp
        .banner
        .as_ref()
        .map_or((None, None), |b| (b.w.or(Some(300)), b.h.or(Some(250))));
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
        w,
        h,
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
        cur: Currency::USD,
        seatbid: &seat,
    };
    enc.encode(&resp).len()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [decoder, rounds, files @ ..] = args.as_slice() else {
        eprintln!("usage: codec_work <serde_json|sonic_rs|simd_json|codec> <rounds> <file>...");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("rounds is a number");
    let bodies: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    let mut enc = ResponseEncoder::with_capacity(16 * 1024);
    let mut buffers = simd_json::Buffers::new(16 * 1024);
    let mut copy = Vec::with_capacity(codec::MAX_BODY_BYTES);
    let mut total = 0usize;
    for _ in 0..rounds {
        for body in &bodies {
            let body = black_box(body.as_slice());
            total += match decoder.as_str() {
                "codec" => match &codec::decode_valid(body) {
                    // Borrowed, not moved: a `ValidRequest` is ~20 KB of inline lists.
                    Ok(v) => Some(respond(v, &mut enc)),
                    Err(_) => None,
                },
                "serde_json" => {
                    let text = std::str::from_utf8(body).expect("UTF-8");
                    let r: BidRequest<'_> = serde_json::from_str(text).expect("decodes");
                    ValidRequest::new(r).ok().map(|v| respond(&v, &mut enc))
                }
                "sonic_rs" => {
                    let r: BidRequest<'_> = sonic_rs::from_slice(body).expect("decodes");
                    ValidRequest::new(r).ok().map(|v| respond(&v, &mut enc))
                }
                "simd_json" => {
                    copy.clear();
                    copy.extend_from_slice(body);
                    let r: BidRequest<'_> =
                        simd_json::serde::from_slice_with_buffers(&mut copy, &mut buffers)
                            .expect("decodes");
                    ValidRequest::new(r).ok().map(|v| respond(&v, &mut enc))
                }
                other => panic!("unknown decoder {other}"),
            }
            .expect("valid corpus file");
        }
    }
    println!("{total}");
}

//! Criterion benchmarks of the codec (figures in bench/RESULTS.md, "## Codec"):
//! `cargo bench -p helios-codec --bench codec -- --warm-up-time 1 --measurement-time 3`.
//!
//! - `decode_validate/<class>/<decoder>`: the same bytes (corpus size classes small ≈ 0.5 KB,
//!   medium ≈ 2 KB, large ≈ 8 KB) into the same serde types (`codec::BidRequest`), then
//!   validation, with serde_json (borrowed), sonic-rs (borrowed) and simd-json. simd-json parses
//!   in place and so needs a mutable copy of the body: `simd_json_copy` counts the copy (into a
//!   reused buffer), `simd_json_in_place` does not (the copy is made in criterion's untimed setup).
//! - `decode_validate/<class>/codec`: `codec::decode_valid` as shipped (whatever decoder it uses).
//! - `encode/<shape>`: `ResponseEncoder::encode` into its warm buffer.
//! - `move/bid_request`: one move of a `BidRequest` (a memcpy of its whole size), to weigh its
//!   inline lists.

use std::hint::black_box;
use std::path::PathBuf;

use codec::money::{Currency, Micros};
use codec::request::BidRequest;
use codec::{Bid, BidResponse, ResponseEncoder, SeatBid, ValidRequest};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/valid")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const CLASSES: [(&str, &str); 3] = [
    ("small", "size-small.json"),
    ("medium", "size-medium.json"),
    ("large", "size-large.json"),
];

fn serde_json_borrowed(body: &[u8]) -> Option<ValidRequest<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let req: BidRequest<'_> = serde_json::from_str(text).ok()?;
    ValidRequest::new(req).ok()
}

fn sonic_rs_borrowed(body: &[u8]) -> Option<ValidRequest<'_>> {
    let req: BidRequest<'_> = sonic_rs::from_slice(body).ok()?;
    ValidRequest::new(req).ok()
}

fn simd_json_in_place<'b>(
    body: &'b mut [u8],
    buffers: &mut simd_json::Buffers,
) -> Option<ValidRequest<'b>> {
    let req: BidRequest<'b> = simd_json::serde::from_slice_with_buffers(body, buffers).ok()?;
    ValidRequest::new(req).ok()
}

fn decode_validate(c: &mut Criterion) {
    eprintln!(
        "size_of::<BidRequest>() = {} bytes, size_of::<ValidRequest>() = {} bytes",
        std::mem::size_of::<BidRequest<'_>>(),
        std::mem::size_of::<ValidRequest<'_>>()
    );
    for (class, file) in CLASSES {
        let body = corpus(file);
        assert!(serde_json_borrowed(&body).is_some(), "{file}: serde_json");
        assert!(sonic_rs_borrowed(&body).is_some(), "{file}: sonic-rs");
        let mut g = c.benchmark_group(format!("decode_validate/{class}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("serde_json", |b| {
            b.iter(|| serde_json_borrowed(black_box(&body)).map(|v| v.imps().len()))
        });
        g.bench_function("sonic_rs", |b| {
            b.iter(|| sonic_rs_borrowed(black_box(&body)).map(|v| v.imps().len()))
        });
        let mut buffers = simd_json::Buffers::new(body.len());
        let mut copy = Vec::with_capacity(body.len());
        g.bench_function("simd_json_copy", |b| {
            b.iter(|| {
                copy.clear();
                copy.extend_from_slice(black_box(&body));
                simd_json_in_place(&mut copy, &mut buffers).map(|v| v.imps().len())
            })
        });
        g.bench_function("simd_json_in_place", |b| {
            b.iter_batched_ref(
                || body.clone(),
                |copy| simd_json_in_place(copy, &mut buffers).map(|v| v.imps().len()),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("codec", |b| {
            b.iter(|| codec::decode_valid(black_box(&body)).map(|v| v.imps().len()))
        });
        g.finish();
    }
}

fn encode(c: &mut Criterion) {
    let adm = format!(
        "<div class=\"ad\"><a href=\"https://click.example/c?id=42\"><img src=\"https://cdn.example/\
         creative/42.jpg\" width=\"300\" height=\"250\"></a></div>{}",
        " ".repeat(600)
    );
    let adomain = ["shoes.example"];
    let one = [Bid {
        id: "b-5f3a9c1e",
        impid: "1",
        price: Micros(1_234_500),
        adid: Some("ad-42"),
        crid: "cr-42",
        cid: "c-7",
        adomain: &adomain,
        dealid: None,
        w: Some(300),
        h: Some(250),
        nurl: Some("https://bid.example/notice/win?r=5f3a9c1e&p=${AUCTION_PRICE}"),
        burl: Some("https://bid.example/notice/bill?r=5f3a9c1e&p=${AUCTION_PRICE}"),
        lurl: Some("https://bid.example/notice/loss?r=5f3a9c1e&l=${AUCTION_LOSS}"),
        adm: Some(&adm),
        adm_json: None,
    }];
    let seat = [SeatBid {
        seat: Some("helios"),
        bid: &one,
    }];
    let resp = BidResponse {
        id: "5f3a9c1e-2b7d-4e61-a0f3-7c9d2e8b4a10",
        bidid: Some("b-5f3a9c1e"),
        cur: Currency::USD,
        seatbid: &seat,
    };
    let eight: Vec<Bid<'_>> = (0..8).map(|_| one[0]).collect();
    let seat8 = [SeatBid {
        seat: Some("helios"),
        bid: &eight,
    }];
    let resp8 = BidResponse {
        seatbid: &seat8,
        ..resp
    };
    let mut enc = ResponseEncoder::with_capacity(16 * 1024);
    let mut g = c.benchmark_group("encode");
    for (name, r) in [("one_bid_1k_adm", &resp), ("eight_bids", &resp8)] {
        let len = enc.encode(r).len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| b.iter(|| enc.encode(black_box(r)).len()));
    }
    g.finish();
}

fn moves(c: &mut Criterion) {
    // A move of a value is a memcpy of its full size, whatever its lists hold.
    let n = std::mem::size_of::<BidRequest<'_>>();
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut g = c.benchmark_group("move");
    g.throughput(Throughput::Bytes(n as u64));
    g.bench_function("bid_request", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    g.finish();
}

criterion_group!(benches, decode_validate, encode, moves);
criterion_main!(benches);

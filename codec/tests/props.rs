//! Property tests: bid responses survive encode → parse; generated bid requests serialised by
//! serde_json decode back to the same fields; decode + validate never panic, whatever the bytes.

mod common;

use std::sync::OnceLock;

use codec::money::{Currency, MAX_CPM_MICROS, Micros};
use codec::response::parsed;
use codec::{Bid, BidResponse, ResponseEncoder, SeatBid};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Responses: encode → parse back.

#[derive(Debug, Clone)]
struct OwnedBid {
    id: String,
    impid: String,
    price: i64,
    adid: Option<String>,
    crid: String,
    cid: String,
    adomain: Vec<String>,
    dealid: Option<String>,
    w: Option<u32>,
    h: Option<u32>,
    nurl: Option<String>,
    burl: Option<String>,
    lurl: Option<String>,
    adm: Option<String>,
}

/// Any string, control characters, quotes, backslashes and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[\\x00-\\x1f\"\\\\/a-z]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

fn owned_bid() -> impl Strategy<Value = OwnedBid> {
    (
        (
            text(),
            text(),
            0..=MAX_CPM_MICROS,
            option::of(text()),
            text(),
        ),
        (text(), vec(text(), 0..4), option::of(text())),
        (option::of(any::<u32>()), option::of(any::<u32>())),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(".{0,300}"),
        ),
    )
        .prop_map(
            |(
                (id, impid, price, adid, crid),
                (cid, adomain, dealid),
                (w, h),
                (nurl, burl, lurl, adm),
            )| OwnedBid {
                id,
                impid,
                price,
                adid,
                crid,
                cid,
                adomain,
                dealid,
                w,
                h,
                nurl,
                burl,
                lurl,
                adm,
            },
        )
}

proptest! {
    #[test]
    fn response_encode_then_parse_gives_back_every_field(
        id in text(),
        bidid in option::of(text()),
        cur in prop::sample::select(Currency::KNOWN),
        seats in vec((option::of(text()), vec(owned_bid(), 1..4)), 0..3),
    ) {
        let domains: Vec<Vec<&str>> = seats
            .iter()
            .flat_map(|(_, bids)| bids.iter().map(|b| b.adomain.iter().map(String::as_str).collect()))
            .collect();
        let mut k = 0;
        let bids: Vec<Vec<Bid<'_>>> = seats
            .iter()
            .map(|(_, bids)| {
                bids.iter()
                    .map(|b| {
                        let adomain = &domains[k];
                        k += 1;
                        Bid {
                            id: &b.id,
                            impid: &b.impid,
                            price: Micros(b.price),
                            adid: b.adid.as_deref(),
                            crid: &b.crid,
                            cid: &b.cid,
                            adomain,
                            dealid: b.dealid.as_deref(),
                            w: b.w,
                            h: b.h,
                            nurl: b.nurl.as_deref(),
                            burl: b.burl.as_deref(),
                            lurl: b.lurl.as_deref(),
                            adm: b.adm.as_deref(),
                            adm_json: None,
                        }
                    })
                    .collect()
            })
            .collect();
        let seatbid: Vec<SeatBid<'_>> = seats
            .iter()
            .zip(&bids)
            .map(|((seat, _), bid)| SeatBid { seat: seat.as_deref(), bid })
            .collect();
        let currency = Currency::parse(cur).expect("from KNOWN");
        let resp = BidResponse { id: &id, bidid: bidid.as_deref(), cur: currency, seatbid: &seatbid };

        let mut enc = ResponseEncoder::with_capacity(64);
        // Encode twice into the same buffer: the second must not see the first.
        enc.encode(&resp);
        let bytes = enc.encode(&resp).to_vec();
        let back: parsed::BidResponse = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;

        prop_assert_eq!(&back.id, &id);
        prop_assert_eq!(&back.bidid, &bidid);
        prop_assert_eq!(back.cur.as_deref(), Some(cur));
        prop_assert_eq!(back.nbr, None);
        prop_assert_eq!(back.seatbid.len(), seats.len());
        for (sb, (seat, want)) in back.seatbid.iter().zip(&seats) {
            prop_assert_eq!(&sb.seat, seat);
            prop_assert_eq!(sb.bid.len(), want.len());
            for (got, want) in sb.bid.iter().zip(want) {
                prop_assert_eq!(&got.id, &want.id);
                prop_assert_eq!(&got.impid, &want.impid);
                // The decimal text is exact: back through a float it rounds to the same micros.
                prop_assert_eq!(Micros::from_f64(got.price), Some(Micros(want.price)));
                prop_assert_eq!(&got.adid, &want.adid);
                prop_assert_eq!(got.crid.as_deref(), Some(want.crid.as_str()));
                prop_assert_eq!(got.cid.as_deref(), Some(want.cid.as_str()));
                prop_assert_eq!(&got.adomain, &want.adomain);
                prop_assert_eq!(&got.dealid, &want.dealid);
                prop_assert_eq!((got.w, got.h), (want.w, want.h));
                prop_assert_eq!(&got.nurl, &want.nurl);
                prop_assert_eq!(&got.burl, &want.burl);
                prop_assert_eq!(&got.lurl, &want.lurl);
                prop_assert_eq!(&got.adm, &want.adm);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: a generated owned request, serialised by serde_json, decodes to the same fields.

#[derive(Debug, Clone, Serialize)]
struct GFormat {
    w: u32,
    h: u32,
}

#[derive(Debug, Clone, Serialize)]
struct GBanner {
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h: Option<u32>,
    format: Vec<GFormat>,
    battr: Vec<u16>,
}

#[derive(Debug, Clone, Serialize)]
struct GVideo {
    mimes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minduration: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxduration: Option<u32>,
    protocols: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plcmt: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
struct GDeal {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bidfloor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bidfloorcur: Option<&'static str>,
    wseat: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct GPmp {
    private_auction: u8,
    deals: Vec<GDeal>,
}

#[derive(Debug, Clone, Serialize)]
struct GImp {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    banner: Option<GBanner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<GVideo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    native: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bidfloor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bidfloorcur: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tagid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pmp: Option<GPmp>,
    /// Unknown to the model: must be skipped.
    ext: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
struct GGeo {
    country: String,
    lat: f64,
    lon: f64,
}

#[derive(Debug, Clone, Serialize)]
struct GDevice {
    ua: String,
    ip: String,
    devicetype: u8,
    ifa: String,
    geo: GGeo,
}

#[derive(Debug, Clone, Serialize)]
struct GSegment {
    id: String,
}

#[derive(Debug, Clone, Serialize)]
struct GData {
    id: String,
    segment: Vec<GSegment>,
}

#[derive(Debug, Clone, Serialize)]
struct GUser {
    id: String,
    consent: String,
    data: Vec<GData>,
}

#[derive(Debug, Clone, Serialize)]
struct GRegs {
    gdpr: u8,
    us_privacy: String,
    gpp: String,
    gpp_sid: Vec<u16>,
}

#[derive(Debug, Clone, Serialize)]
struct GNode {
    asi: String,
    sid: String,
    hp: u8,
}

#[derive(Debug, Clone, Serialize)]
struct GSchain {
    complete: u8,
    nodes: Vec<GNode>,
}

#[derive(Debug, Clone, Serialize)]
struct GSource {
    tid: String,
    schain: GSchain,
}

#[derive(Debug, Clone, Serialize)]
struct GSite {
    domain: String,
    page: String,
    cat: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct GRequest {
    id: String,
    imp: Vec<GImp>,
    site: GSite,
    device: GDevice,
    user: GUser,
    regs: GRegs,
    source: GSource,
    tmax: u32,
    at: u32,
    cur: Vec<&'static str>,
    bcat: Vec<String>,
    badv: Vec<String>,
    wseat: Vec<String>,
    test: u8,
}

/// A price with at most 6 decimals, as exchanges send them.
fn price() -> impl Strategy<Value = f64> {
    (0i64..=1_000_000_000).prop_map(|m| m as f64 / 1_000_000.0)
}

fn currency() -> impl Strategy<Value = &'static str> {
    prop::sample::select(Currency::KNOWN)
}

fn imp() -> impl Strategy<Value = GImp> {
    let banner = (
        option::of(1u32..=10_000),
        option::of(1u32..=10_000),
        vec(
            (1u32..=2000, 1u32..=2000).prop_map(|(w, h)| GFormat { w, h }),
            0..20,
        ),
        vec(any::<u16>(), 0..40),
    )
        .prop_map(|(w, h, format, battr)| GBanner {
            w,
            h,
            format,
            battr,
        });
    let video = (
        vec(text(), 0..10),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        vec(any::<u16>(), 0..20),
        option::of(1u32..=4000),
        option::of(1u32..=4000),
        option::of(1u8..=4),
    )
        .prop_map(
            |(mimes, minduration, maxduration, protocols, w, h, plcmt)| GVideo {
                mimes,
                minduration,
                maxduration,
                protocols,
                w,
                h,
                plcmt,
            },
        );
    let deal = (
        text(),
        option::of(price()),
        option::of(currency()),
        vec(text(), 0..6),
    )
        .prop_map(|(id, bidfloor, bidfloorcur, wseat)| GDeal {
            id,
            bidfloor,
            bidfloorcur,
            wseat,
        });
    let pmp = (0u8..=1, vec(deal, 0..6)).prop_map(|(private_auction, deals)| GPmp {
        private_auction,
        deals,
    });
    (
        option::of(banner),
        option::of(video),
        any::<bool>(),
        option::of(price()),
        option::of(currency()),
        option::of(text()),
        option::of(pmp),
        text(),
    )
        .prop_map(
            |(banner, video, native, bidfloor, bidfloorcur, tagid, pmp, noise)| {
                // At least one media object, so the imp passes validation.
                let native = (native || (banner.is_none() && video.is_none()))
                    .then(|| serde_json::json!({"request": noise, "ver": "1.2"}));
                GImp {
                    id: String::new(),
                    banner,
                    video,
                    native,
                    bidfloor,
                    bidfloorcur,
                    tagid,
                    pmp,
                    ext: serde_json::json!({"gpid": noise, "nested": [[{"a": [1, 2.5, null]}]]}),
                }
            },
        )
}

fn request() -> impl Strategy<Value = GRequest> {
    let device = (
        text(),
        text(),
        any::<u8>(),
        text(),
        text(),
        -90_000_000..=90_000_000i64,
        -180_000_000..=180_000_000i64,
    )
        .prop_map(|(ua, ip, devicetype, ifa, country, lat, lon)| GDevice {
            ua,
            ip,
            devicetype,
            ifa,
            // Six decimals, as exchanges send coordinates: exact through serde_json's default
            // float parser (17-digit floats may land one ulp off without `float_roundtrip`).
            geo: GGeo {
                country,
                lat: lat as f64 / 1e6,
                lon: lon as f64 / 1e6,
            },
        });
    let data = (text(), vec(text().prop_map(|id| GSegment { id }), 0..20))
        .prop_map(|(id, segment)| GData { id, segment });
    let user = (text(), text(), vec(data, 0..6)).prop_map(|(id, consent, data)| GUser {
        id,
        consent,
        data,
    });
    let regs = (0u8..=1, text(), text(), vec(any::<u16>(), 0..20)).prop_map(
        |(gdpr, us_privacy, gpp, gpp_sid)| GRegs {
            gdpr,
            us_privacy,
            gpp,
            gpp_sid,
        },
    );
    let node = (text(), text(), 0u8..=1).prop_map(|(asi, sid, hp)| GNode { asi, sid, hp });
    let source = (text(), 0u8..=1, vec(node, 0..10)).prop_map(|(tid, complete, nodes)| GSource {
        tid,
        schain: GSchain { complete, nodes },
    });
    let site = (text(), text(), vec(text(), 0..20)).prop_map(|(domain, page, cat)| GSite {
        domain,
        page,
        cat,
    });
    (
        (
            text().prop_filter("id is required", |s| !s.is_empty()),
            vec(imp(), 1..=8),
        ),
        (site, device, user, regs, source),
        (any::<u32>(), 1u32..=3, vec(currency(), 0..8), 0u8..=1),
        (vec(text(), 0..40), vec(text(), 0..40), vec(text(), 0..20)),
    )
        .prop_map(
            |(
                (id, mut imp),
                (site, device, user, regs, source),
                (tmax, at, cur, test),
                (bcat, badv, wseat),
            )| {
                for (i, m) in imp.iter_mut().enumerate() {
                    m.id = format!("imp-{i}");
                }
                GRequest {
                    id,
                    imp,
                    site,
                    device,
                    user,
                    regs,
                    source,
                    tmax,
                    at,
                    cur,
                    bcat,
                    badv,
                    wseat,
                    test,
                }
            },
        )
}

/// The first `N` of `want` were kept, the rest counted as dropped.
fn check_capped<T: PartialEq + std::fmt::Debug, U, const N: usize>(
    got: &codec::Capped<T, N>,
    want: &[U],
    map: impl Fn(&U) -> T,
) -> Result<(), TestCaseError> {
    let kept: Vec<T> = want.iter().take(N).map(map).collect();
    prop_assert_eq!(got.as_slice(), kept.as_slice());
    prop_assert_eq!(got.dropped() as usize, want.len().saturating_sub(N));
    Ok(())
}

fn s<'r>(v: &'r Option<codec::Str<'_>>) -> Option<&'r str> {
    v.as_deref()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn generated_requests_decode_to_the_same_fields(g in request()) {
        let body = serde_json::to_vec(&g).expect("serialisable");
        let v = codec::decode_valid(&body)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&body))))?;
        let r = v.req();
        prop_assert_eq!(v.id(), g.id.as_str());
        prop_assert_eq!(r.imp.len(), g.imp.len());
        for ((got, want), derived) in r.imp.iter().zip(&g.imp).zip(v.imps()) {
            prop_assert_eq!(got.id.as_deref(), Some(want.id.as_str()));
            prop_assert_eq!(got.bidfloor, want.bidfloor);
            prop_assert_eq!(derived.floor, want.bidfloor.and_then(Micros::from_f64).unwrap_or(Micros::ZERO));
            prop_assert_eq!(derived.floor_cur.as_str(), want.bidfloorcur.unwrap_or("USD"));
            prop_assert_eq!(got.tagid.as_deref(), want.tagid.as_deref());
            prop_assert_eq!(got.native.is_some(), want.native.is_some());
            prop_assert_eq!(got.banner.is_some(), want.banner.is_some());
            if let (Some(b), Some(wb)) = (&got.banner, &want.banner) {
                prop_assert_eq!((b.w, b.h), (wb.w, wb.h));
                check_capped(&b.format, &wb.format, |f| codec::request::Format { w: f.w, h: f.h })?;
                check_capped(&b.battr, &wb.battr, |a| *a)?;
            }
            prop_assert_eq!(got.video.is_some(), want.video.is_some());
            if let (Some(vd), Some(wv)) = (&got.video, &want.video) {
                let mimes: Vec<&str> = vd.mimes.iter().map(|m| &**m).collect();
                let wmimes: Vec<&str> = wv.mimes.iter().take(8).map(String::as_str).collect();
                prop_assert_eq!(mimes, wmimes);
                prop_assert_eq!(vd.mimes.dropped() as usize, wv.mimes.len().saturating_sub(8));
                prop_assert_eq!((vd.minduration, vd.maxduration), (wv.minduration, wv.maxduration));
                check_capped(&vd.protocols, &wv.protocols, |p| *p)?;
                prop_assert_eq!((vd.w, vd.h, vd.plcmt), (wv.w, wv.h, wv.plcmt));
            }
            prop_assert_eq!(got.pmp.is_some(), want.pmp.is_some());
            if let (Some(p), Some(wp)) = (&got.pmp, &want.pmp) {
                prop_assert_eq!(p.private_auction, Some(wp.private_auction));
                prop_assert_eq!(p.deals.len(), wp.deals.len().min(4));
                prop_assert_eq!(p.deals.dropped() as usize, wp.deals.len().saturating_sub(4));
                for (d, wd) in p.deals.iter().zip(&wp.deals) {
                    prop_assert_eq!(s(&d.id), Some(wd.id.as_str()));
                    prop_assert_eq!(d.bidfloor, wd.bidfloor);
                    prop_assert_eq!(s(&d.bidfloorcur), wd.bidfloorcur);
                    let seats: Vec<&str> = d.wseat.iter().map(|x| &**x).collect();
                    let wseats: Vec<&str> = wd.wseat.iter().take(4).map(String::as_str).collect();
                    prop_assert_eq!(seats, wseats);
                }
            }
        }
        let site = r.site.as_ref().expect("site sent");
        prop_assert_eq!(s(&site.domain), Some(g.site.domain.as_str()));
        prop_assert_eq!(s(&site.page), Some(g.site.page.as_str()));
        let cats: Vec<&str> = site.cat.iter().map(|x| &**x).collect();
        let wcats: Vec<&str> = g.site.cat.iter().take(16).map(String::as_str).collect();
        prop_assert_eq!(cats, wcats);

        let d = r.device.as_ref().expect("device sent");
        prop_assert_eq!(s(&d.ua), Some(g.device.ua.as_str()));
        prop_assert_eq!(s(&d.ip), Some(g.device.ip.as_str()));
        prop_assert_eq!(s(&d.ifa), Some(g.device.ifa.as_str()));
        prop_assert_eq!(d.devicetype, Some(g.device.devicetype));
        let geo = d.geo.as_ref().expect("geo sent");
        prop_assert_eq!(s(&geo.country), Some(g.device.geo.country.as_str()));
        prop_assert_eq!((geo.lat, geo.lon), (Some(g.device.geo.lat), Some(g.device.geo.lon)));

        let u = r.user.as_ref().expect("user sent");
        prop_assert_eq!(s(&u.id), Some(g.user.id.as_str()));
        prop_assert_eq!(r.consent(), Some(g.user.consent.as_str()));
        prop_assert_eq!(u.data.len(), g.user.data.len().min(4));
        for (dt, wd) in u.data.iter().zip(&g.user.data) {
            prop_assert_eq!(s(&dt.id), Some(wd.id.as_str()));
            let segs: Vec<Option<&str>> = dt.segment.iter().map(|x| s(&x.id)).collect();
            let wsegs: Vec<Option<&str>> = wd.segment.iter().take(16).map(|x| Some(x.id.as_str())).collect();
            prop_assert_eq!(segs, wsegs);
        }

        prop_assert_eq!(r.gdpr(), Some(g.regs.gdpr));
        prop_assert_eq!(r.us_privacy(), Some(g.regs.us_privacy.as_str()));
        prop_assert_eq!(r.gpp(), Some(g.regs.gpp.as_str()));
        let sids: Vec<u16> = g.regs.gpp_sid.iter().take(16).copied().collect();
        prop_assert_eq!(r.gpp_sid(), sids.as_slice());

        let src = r.source.as_ref().expect("source sent");
        prop_assert_eq!(s(&src.tid), Some(g.source.tid.as_str()));
        let sc = r.schain().expect("schain sent");
        prop_assert_eq!(sc.complete, Some(g.source.schain.complete));
        let nodes: Vec<(Option<&str>, Option<&str>, Option<u8>)> =
            sc.nodes.iter().map(|n| (s(&n.asi), s(&n.sid), n.hp)).collect();
        let wnodes: Vec<(Option<&str>, Option<&str>, Option<u8>)> = g.source.schain.nodes.iter().take(8)
            .map(|n| (Some(n.asi.as_str()), Some(n.sid.as_str()), Some(n.hp))).collect();
        prop_assert_eq!(nodes, wnodes);

        prop_assert_eq!((r.tmax, r.at, r.test), (Some(g.tmax), Some(g.at), Some(g.test)));
        let curs: Vec<&str> = r.cur.iter().map(|x| &**x).collect();
        prop_assert_eq!(curs, g.cur.clone());
        for (list, want) in [(&r.bcat, &g.bcat), (&r.badv, &g.badv)] {
            for item in want.iter() {
                prop_assert!(list.contains(item), "{item:?} missing from a block list");
            }
            prop_assert_eq!(list.len(), want.len());
        }
        let seats: Vec<&str> = r.wseat.iter().map(|x| &**x).collect();
        let wseats: Vec<&str> = g.wseat.iter().take(16).map(String::as_str).collect();
        prop_assert_eq!(seats, wseats);

        // Strings without escapes were borrowed, not copied.
        let id = r.id.as_ref().expect("id");
        let needs_escape = g.id.chars().any(|c| c == '"' || c == '\\' || c < ' ');
        prop_assert_eq!(id.is_borrowed(), !needs_escape);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile bytes: decode + validate return, never panic.

fn valid_corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| common::corpus("valid"))
}

/// One edit to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\u".to_vec()),
        Just(b":".to_vec()),
        Just(b",".to_vec()),
        Just(b"null".to_vec()),
        Just(b"-1e999".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(vec![0xff]),
        Just(vec![0xed, 0xa0, 0x80]),
        vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), token).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let n = body.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = body.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = body.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (body.len() + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(body.len());
            body.drain(at.min(end)..end);
        }
        Mutation::Duplicate { at, len } => {
            let at = at % n;
            let end = (at + len).min(body.len());
            let chunk: Vec<u8> = body[at.min(end)..end].to_vec();
            body.splice(at..at, chunk);
        }
        Mutation::Truncate { at } => body.truncate(at % n),
    }
}

/// Decode, validate and, when valid, read every derived value: must return, not panic.
fn exercise(body: &[u8]) {
    if let Ok(v) = codec::decode_valid(body) {
        let r = v.req();
        let _ = (
            r.gdpr(),
            r.consent(),
            r.us_privacy(),
            r.gpp(),
            r.gpp_sid(),
            r.eids(),
            r.schain(),
        );
        assert!(!v.id().is_empty());
        assert_eq!(v.imps().len(), r.imp.len());
        assert!(
            v.imps()
                .iter()
                .all(|i| (0..=MAX_CPM_MICROS).contains(&i.floor.0))
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..4096)) {
        exercise(&body);
    }

    #[test]
    fn json_shaped_noise_never_panics(body in "[{}\\[\\]\":,0-9a-z.eE+\\-\\\\ ]{0,512}") {
        let mut with_head = br#"{"id":"r","imp":[{"id":"1","banner":{}}],"#.to_vec();
        with_head.extend_from_slice(body.as_bytes());
        exercise(body.as_bytes());
        exercise(&with_head);
    }

    #[test]
    fn mutated_corpus_files_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec(mutation(), 1..6),
    ) {
        let files = valid_corpus();
        let mut body = files[pick.index(files.len())].1.clone();
        for m in &edits {
            apply(&mut body, m);
        }
        exercise(&body);
    }
}

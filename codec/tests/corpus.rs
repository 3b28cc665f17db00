//! The corpus under `tests/corpus/`: every valid request decodes, validates and yields the
//! fields written in it; every malformed one is refused with the error it deserves, never a panic.
//! A file without assertions here fails the test, so the corpus and its checks grow together.

mod common;

use codec::money::{Currency, Micros};
use codec::request::BidRequest;
use codec::{DecodeError, MAX_BODY_BYTES, RequestError, ValidRequest};

fn strs<'s>(items: impl IntoIterator<Item = &'s codec::Str<'s>>) -> Vec<&'s str> {
    items.into_iter().map(|s| &**s).collect()
}

/// The assertions for one valid file: specific values, written by reading the file.
fn check(name: &str, v: &ValidRequest<'_>) {
    let r: &BidRequest<'_> = v.req();
    let imp0 = &r.imp[0];
    match name {
        "display-site.json" => {
            assert_eq!(v.id(), "80ce30c53c16e6ede735f123ef6e32361bfc7b22");
            assert_eq!(r.at, Some(1));
            assert_eq!(r.tmax, Some(120));
            assert_eq!(strs(r.cur.iter()), ["USD"]);
            assert_eq!(imp0.tagid.as_deref(), Some("homepage-top-leaderboard"));
            assert_eq!(imp0.secure, Some(1));
            assert_eq!(v.imps()[0].floor, Micros(30_000));
            assert_eq!(v.imps()[0].floor_cur, Currency::USD);
            let b = imp0.banner.as_ref().expect("banner");
            assert_eq!((b.w, b.h), (Some(728), Some(90)));
            let sizes: Vec<_> = b.format.iter().map(|f| (f.w, f.h)).collect();
            assert_eq!(sizes, [(728, 90), (970, 90)]);
            assert_eq!(b.battr.as_slice(), &[14]);
            let site = r.site.as_ref().expect("site");
            assert_eq!(site.id.as_deref(), Some("102855"));
            assert_eq!(site.domain.as_deref(), Some("news.example.com"));
            assert_eq!(strs(site.cat.iter()), ["IAB12", "IAB12-1"]);
            assert!(
                site.page
                    .as_deref()
                    .is_some_and(|p| p.ends_with("story.html"))
            );
            let publisher = site.publisher.as_ref().expect("publisher");
            assert_eq!(publisher.id.as_deref(), Some("8953"));
            let d = r.device.as_ref().expect("device");
            assert!(
                d.ua.as_deref()
                    .is_some_and(|u| u.contains("Safari/605.1.15"))
            );
            assert_eq!(d.ip.as_deref(), Some("203.0.113.42"));
            assert_eq!(d.devicetype, Some(2));
            assert_eq!(d.language.as_deref(), Some("en"));
            let g = d.geo.as_ref().expect("geo");
            assert_eq!(g.country.as_deref(), Some("USA"));
            assert_eq!(g.city.as_deref(), Some("New York"));
            let u = r.user.as_ref().expect("user");
            assert_eq!(
                u.buyeruid.as_deref(),
                Some("545678765467876567898765678987654")
            );
            assert_eq!(r.regs.as_ref().and_then(|g| g.coppa), Some(0));
            assert_eq!(r.gdpr(), None);
            assert!(r.bcat.contains("IAB25") && r.bcat.contains("iab26"));
            assert!(r.badv.contains("Competitor.Example"));
            assert!(!r.badv.contains("example.com"));
            assert_eq!(
                r.source.as_ref().and_then(|s| s.tid.as_deref()),
                Some("9f5b4c2e-6a2d-4a8e-9c11-2b7c0f4a5d31")
            );
        }
        "mobile-app.json" => {
            assert_eq!(v.id(), "IxexyLDIIk");
            assert_eq!(r.at, Some(2));
            assert!(r.site.is_none());
            let app = r.app.as_ref().expect("app");
            assert_eq!(app.bundle.as_deref(), Some("12345"));
            assert_eq!(strs(app.cat.iter()), ["IAB15", "IAB15-10"]);
            assert_eq!(
                app.publisher.as_ref().and_then(|p| p.id.as_deref()),
                Some("agltb3B1Yi1pbmNyDAsSA0FwcBiJkfTUCV")
            );
            assert_eq!(imp0.instl, Some(0));
            assert_eq!(v.imps()[0].floor, Micros(500_000));
            let d = r.device.as_ref().expect("device");
            assert_eq!(d.devicetype, Some(4));
            assert_eq!(d.os.as_deref(), Some("iOS"));
            assert_eq!(d.osv.as_deref(), Some("17.1"));
            assert_eq!(
                (d.make.as_deref(), d.model.as_deref()),
                (Some("Apple"), Some("iPhone"))
            );
            assert_eq!(d.connectiontype, Some(3));
            assert_eq!(
                d.ifa.as_deref(),
                Some("AA000DFE74168477C70D291f574D344790E0BB11")
            );
            assert_eq!(d.lmt, Some(0));
            let g = d.geo.as_ref().expect("geo");
            assert_eq!((g.lat, g.lon), (Some(35.012345), Some(-115.12345)));
            assert_eq!(g.region.as_deref(), Some("CA"));
            assert_eq!(r.bcat.len(), 5);
            assert!(r.bapp.contains("com.rival.game"));
            assert!(r.badv.contains("heywire.com"));
            assert_eq!(r.tmax, Some(100));
        }
        "video-instream.json" => {
            let vid = imp0.video.as_ref().expect("video");
            assert_eq!(vid.mimes.len(), 4);
            assert_eq!(&*vid.mimes[1], "video/mp4");
            assert_eq!((vid.minduration, vid.maxduration), (Some(5), Some(30)));
            assert_eq!(vid.protocols.as_slice(), &[2, 3, 5, 6]);
            assert_eq!((vid.w, vid.h), (Some(640), Some(480)));
            assert_eq!((vid.plcmt, vid.linearity), (Some(1), Some(1)));
            assert_eq!(vid.battr.as_slice(), &[13, 14]);
            assert!(imp0.banner.is_none());
            assert_eq!(v.imps()[0].floor, Micros(3_000_000));
            let u = r.user.as_ref().expect("user");
            let seg: Vec<_> = u.data[0].segment.iter().map(|s| s.id.as_deref()).collect();
            assert_eq!(
                seg,
                [
                    Some("12341318394918"),
                    Some("1234131839491234"),
                    Some("23423424")
                ]
            );
            assert_eq!(r.tmax, Some(250));
        }
        "native.json" => {
            assert!(imp0.native.is_some());
            assert!(imp0.banner.is_none() && imp0.video.is_none());
            assert_eq!(v.imps()[0].floor, Micros(1_200_000));
            let d = r.device.as_ref().expect("device");
            assert_eq!(d.os.as_deref(), Some("Android"));
            assert_eq!(
                d.geo.as_ref().and_then(|g| g.country.as_deref()),
                Some("GBR")
            );
        }
        "multi-imp.json" => {
            let ids: Vec<_> = r.imp.iter().map(|i| i.id.as_deref()).collect();
            assert_eq!(
                ids,
                [
                    Some("top"),
                    Some("pre-roll"),
                    Some("in-feed"),
                    Some("podcast-mid")
                ]
            );
            assert!(r.imp[0].banner.is_some());
            assert!(r.imp[1].video.is_some());
            assert!(r.imp[2].native.is_some());
            assert!(r.imp[3].audio.is_some());
            let floors: Vec<_> = v.imps().iter().map(|i| (i.floor, i.floor_cur)).collect();
            assert_eq!(
                floors,
                [
                    (Micros(800_000), Currency::USD),
                    (Micros(6_500_000), Currency::EUR),
                    (Micros::ZERO, Currency::USD),
                    (Micros(2_000_000), Currency::USD),
                ]
            );
            assert!(v.accepts(Currency::EUR) && v.accepts(Currency::USD));
            assert!(!v.accepts(Currency::parse("GBP").expect("known")));
        }
        "pmp-deals.json" => {
            let pmp = imp0.pmp.as_ref().expect("pmp");
            assert_eq!(pmp.private_auction, Some(1));
            let deals: Vec<_> = pmp
                .deals
                .iter()
                .map(|d| (d.id.as_deref(), d.bidfloor, d.at, d.wseat.len()))
                .collect();
            assert_eq!(
                deals,
                [
                    (Some("AB-Agency1-0001"), Some(2.5), Some(1), 1),
                    (Some("XY-Agency2-0002"), Some(2.0), Some(2), 2),
                    (Some("PG-0003"), Some(12.75), Some(3), 0),
                ]
            );
            assert_eq!(pmp.deals[1].bidfloorcur.as_deref(), Some("EUR"));
            assert_eq!(&*pmp.deals[1].wseat[1], "Agency3");
            assert_eq!(strs(r.wseat.iter()), ["Agency1", "Agency2", "Agency3"]);
        }
        "privacy-2-6.json" => {
            assert_eq!(r.gdpr(), Some(1));
            assert_eq!(
                r.consent(),
                Some("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA")
            );
            assert_eq!(r.us_privacy(), Some("1---"));
            assert_eq!(
                r.gpp(),
                Some("DBACNYA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN")
            );
            assert_eq!(r.gpp_sid(), &[2, 6]);
            let eids: Vec<_> = r
                .eids()
                .iter()
                .map(|e| (e.source.as_deref(), e.uids[0].id.as_deref()))
                .collect();
            assert_eq!(
                eids,
                [
                    (Some("id5-sync.com"), Some("ID5*xyz")),
                    (
                        Some("liveramp.com"),
                        Some("XY1000bIVBVah9ium-sZ3ykhPiXQbEcUpn4GjCtxrrw2BRDGM")
                    ),
                ]
            );
        }
        "privacy-2-5-ext.json" => {
            assert_eq!(r.gdpr(), Some(1));
            assert_eq!(r.consent(), Some("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"));
            assert_eq!(r.us_privacy(), Some("1YNN"));
            assert_eq!(
                r.gpp(),
                Some("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA")
            );
            assert_eq!(r.gpp_sid(), &[2]);
            assert_eq!(r.eids().len(), 1);
            assert_eq!(r.eids()[0].source.as_deref(), Some("adserver.org"));
            assert_eq!(r.eids()[0].uids[0].id.as_deref(), Some("TTD-0001"));
            let sc = r.schain().expect("schain from source.ext");
            assert_eq!(sc.complete, Some(1));
            assert_eq!(sc.nodes.len(), 1);
            assert_eq!(sc.nodes[0].asi.as_deref(), Some("exchange1.com"));
            let d = r.device.as_ref().expect("device");
            assert_eq!(d.lmt, Some(1));
            assert_eq!(
                r.app.as_ref().and_then(|a| a.bundle.as_deref()),
                Some("com.example.game")
            );
        }
        "us-privacy-gpp.json" => {
            assert_eq!(r.gdpr(), None);
            assert_eq!(r.consent(), None);
            assert_eq!(r.us_privacy(), Some("1YYN"));
            assert_eq!(r.gpp(), Some("DBABL~BVVqAAEABgA.QA"));
            assert_eq!(r.gpp_sid(), &[7]);
            assert_eq!(v.imps()[0].floor, Micros(100_000));
        }
        "schain.json" => {
            let sc = r.schain().expect("schain");
            assert_eq!(sc.complete, Some(1));
            let nodes: Vec<_> = sc
                .nodes
                .iter()
                .map(|n| (n.asi.as_deref(), n.sid.as_deref(), n.hp))
                .collect();
            assert_eq!(
                nodes,
                [
                    (Some("directseller.com"), Some("00001"), Some(1)),
                    (Some("reseller.com"), Some("aaaaa"), Some(1)),
                    (Some("exchange.example"), Some("x-77"), Some(1)),
                ]
            );
        }
        "escapes-unicode.json" => {
            assert_eq!(v.id(), "esc-été-01");
            assert!(!r.id.as_ref().expect("id").is_borrowed(), "escaped → owned");
            assert_eq!(imp0.tagid.as_deref(), Some("slot \"hero\""));
            let site = r.site.as_ref().expect("site");
            assert_eq!(site.domain.as_deref(), Some("café.example.fr"));
            assert_eq!(
                site.page.as_deref(),
                Some("https://café.example.fr/menü?q=a\\b&x=😀")
            );
            let publisher = site.publisher.as_ref().and_then(|p| p.id.as_ref());
            let publisher = publisher.expect("publisher id");
            assert_eq!(&**publisher, "Zürich-Verlag");
            assert!(
                publisher.is_borrowed(),
                "raw UTF-8 without escapes is borrowed"
            );
            let d = r.device.as_ref().expect("device");
            assert_eq!(
                d.ua.as_deref(),
                Some("Mozilla/5.0 (X11; Linux x86_64) \t\"quoted\"")
            );
            let g = d.geo.as_ref().expect("geo");
            assert_eq!(g.city.as_deref(), Some("Zürich"));
            assert_eq!(g.region.as_deref(), Some("東京"));
            let uid = r.user.as_ref().and_then(|u| u.id.as_deref());
            assert_eq!(uid, Some("\0nul-and-\u{1f}-controls"));
            assert!(r.badv.contains("example.com"));
            assert!(r.badv.contains("CAFÉ.example.fr") || r.badv.contains("café.example.fr"));
        }
        "blocklists-and-auction.json" => {
            assert!(v.is_test());
            assert_eq!((r.at, r.tmax), (Some(1), Some(80)));
            assert!(v.accepts(Currency::EUR) && !v.accepts(Currency::USD));
            assert_eq!(strs(r.wseat.iter()), ["seat-a", "seat-b"]);
            assert_eq!((r.bcat.len(), r.badv.len(), r.bapp.len()), (7, 2, 2));
            assert!(r.bcat.contains("IAB26") && !r.bcat.contains("IAB1"));
            assert!(r.badv.contains("blocked.example"));
            assert!(r.bapp.contains("id1234567"));
            assert_eq!(v.imps()[0].floor, Micros(1));
            assert_eq!(v.imps()[0].floor_cur, Currency::EUR);
            let b = imp0.banner.as_ref().expect("banner");
            assert_eq!(b.battr.as_slice(), &[1, 3, 8, 9, 10, 14]);
        }
        "unknown-fields.json" => {
            assert_eq!(v.id(), "unk-01");
            let b = imp0.banner.as_ref().expect("banner");
            assert_eq!((b.w, b.h), (Some(300), Some(250)));
            assert_eq!(
                r.site.as_ref().and_then(|s| s.domain.as_deref()),
                Some("example.org")
            );
            assert_eq!(
                r.device.as_ref().and_then(|d| d.ua.as_deref()),
                Some("Mozilla/5.0")
            );
        }
        "size-small.json" => {
            assert_eq!(v.id(), "5f3a9c1e-2b7d-4e61-a0f3-7c9d2e8b4a10");
            assert_eq!(r.imp.len(), 1);
            assert_eq!(v.imps()[0].floor, Micros(250_000));
            assert_eq!(
                r.user.as_ref().and_then(|u| u.id.as_deref()),
                Some("u-7a9d20c4")
            );
        }
        "size-medium.json" => {
            let app = r.app.as_ref().expect("app");
            assert_eq!(app.bundle.as_deref(), Some("com.example.puzzle"));
            let d = r.device.as_ref().expect("device");
            assert_eq!(d.connectiontype, Some(6));
            assert_eq!(
                d.ifa.as_deref(),
                Some("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
            );
            assert_eq!(r.user.as_ref().map(|u| u.data[0].segment.len()), Some(8));
            assert_eq!(r.gpp_sid(), &[7]);
            assert_eq!(r.us_privacy(), Some("1YNN"));
            assert_eq!(r.schain().map(|s| s.nodes.len()), Some(1));
            assert_eq!(r.badv.len(), 6);
            assert_eq!(v.imps()[0].floor, Micros(420_000));
        }
        "size-large.json" => {
            assert_eq!(r.imp.len(), 8);
            let kinds: Vec<_> = r
                .imp
                .iter()
                .map(|i| match (&i.banner, &i.video, &i.native) {
                    (Some(_), _, _) => 'b',
                    (_, Some(_), _) => 'v',
                    (_, _, Some(_)) => 'n',
                    _ => '?',
                })
                .collect();
            assert_eq!(kinds.iter().collect::<String>(), "bbvnbvbn");
            assert_eq!(r.imp[0].banner.as_ref().map(|b| b.format.len()), Some(6));
            let floors: Vec<_> = v.imps().iter().map(|i| i.floor.0).collect();
            assert_eq!(
                floors,
                [
                    500_000, 750_000, 1_000_000, 1_250_000, 1_500_000, 1_750_000, 2_000_000,
                    2_250_000
                ]
            );
            let pmp = r.imp[4].pmp.as_ref().expect("pmp on imp 5");
            assert_eq!(pmp.deals.len(), 3);
            assert_eq!(pmp.deals[2].id.as_deref(), Some("deal-4-2"));
            assert_eq!(r.badv.len(), 40);
            assert_eq!(r.bapp.len(), 8);
            assert_eq!(r.eids().len(), 3);
            let u = r.user.as_ref().expect("user");
            assert_eq!(u.data.len(), 3);
            assert_eq!(u.data[0].segment.len(), 12);
            assert_eq!(r.schain().map(|s| s.nodes.len()), Some(3));
            assert_eq!(r.gpp_sid(), &[7, 8]);
        }
        other => panic!("corpus file {other} has no assertions in tests/corpus.rs"),
    }
}

#[test]
fn every_valid_file_decodes_validates_and_yields_its_fields() {
    for (name, bytes) in common::corpus("valid") {
        let v = codec::decode_valid(&bytes).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        check(&name, &v);
        // Strings without escapes borrow from the buffer: the id is one of them in every file
        // but the escapes file.
        let id = v.req().id.as_ref().expect("validated id");
        if name != "escapes-unicode.json" {
            assert!(id.is_borrowed(), "{name}: id was copied");
        }
    }
}

/// The size classes the benchmarks use really have those sizes.
#[test]
fn size_classes_are_about_the_sizes_they_claim() {
    for (name, lo, hi) in [
        ("size-small.json", 400, 800),
        ("size-medium.json", 1_600, 2_600),
        ("size-large.json", 6_500, 10_000),
    ] {
        let n = common::file("valid", name).len();
        assert!((lo..=hi).contains(&n), "{name}: {n} bytes");
    }
}

/// What each malformed file must be refused with: a fragment of the error's message (the text
/// the appliance returns with HTTP 400).
const MALFORMED: &[(&str, &str)] = &[
    (
        "bad-escape.json",
        "Invalid escape chars at line 1 column 10",
    ),
    (
        "deep-nesting-arrays.json",
        "nesting deeper than 512 at byte 574",
    ),
    (
        "deep-nesting-in-known-field.json",
        "nesting deeper than 512",
    ),
    ("deep-nesting-objects.json", "nesting deeper than 512"),
    ("duplicate-key.json", "duplicate field `id`"),
    ("empty.json", "body is not a JSON object"),
    ("huge-number-digits.json", "Float number must be finite"),
    ("huge-number-float.json", "Float number must be finite"),
    ("huge-number-integer.json", "expected u32"),
    ("invalid-absurd-floor.json", "imp[0].bidfloor"),
    (
        "invalid-absurd-video-size.json",
        "imp[0]: size out of range",
    ),
    (
        "invalid-blocklist-too-long.json",
        "badv: more than 256 entries",
    ),
    (
        "invalid-duplicate-imp-id.json",
        "imp[2].id: duplicate imp id",
    ),
    ("invalid-empty-id.json", "missing field: id"),
    ("invalid-empty-imp-id.json", "missing field: imp[].id"),
    ("invalid-missing-id.json", "missing field: id"),
    ("invalid-missing-imp.json", "missing field: imp"),
    ("invalid-negative-deal-floor.json", "imp[0].pmp.deals"),
    ("invalid-negative-floor.json", "imp[0].bidfloor"),
    (
        "invalid-no-media.json",
        "imp[0]: no banner, video, native or audio",
    ),
    ("invalid-site-and-app.json", "site and app"),
    ("invalid-too-many-imps.json", "more than 8 imps"),
    (
        "invalid-unknown-currency.json",
        "imp[].bidfloorcur: unknown currency",
    ),
    (
        "invalid-unknown-response-currency.json",
        "cur: unknown currency",
    ),
    ("invalid-utf8-in-id.json", "invalid UTF-8 at byte 9"),
    (
        "invalid-utf8-in-unknown-field.json",
        "invalid UTF-8 at byte",
    ),
    ("invalid-utf8-surrogate-bytes.json", "invalid UTF-8 at byte"),
    ("invalid-zero-format-size.json", "imp[0]: size out of range"),
    (
        "lone-surrogate-escape.json",
        "Invalid surrogate Unicode code point",
    ),
    ("nan-literal.json", "Invalid JSON value at line 1 column 67"),
    (
        "raw-control-char.json",
        "Control character found while parsing a string",
    ),
    (
        "single-quotes.json",
        "Expected this character to be '\"' or '}'",
    ),
    ("top-level-array.json", "body is not a JSON object"),
    ("top-level-null.json", "body is not a JSON object"),
    ("trailing-comma.json", "comma after the last value"),
    ("trailing-garbage.json", "trailing characters"),
    ("truncated-mid-number.json", "EOF while parsing"),
    ("truncated-mid-object.json", "EOF while parsing"),
    (
        "truncated-mid-string.json",
        "EOF while parsing at line 1 column 10",
    ),
    ("utf8-bom.json", "body is not a JSON object"),
    ("whitespace-only.json", "body is not a JSON object"),
    (
        "wrong-type-bidfloor-string.json",
        "invalid type: string \"0.5\", expected f64",
    ),
    ("wrong-type-devicetype-overflow.json", "expected u8"),
    (
        "wrong-type-id-number.json",
        "invalid type: integer `42`, expected a string",
    ),
    (
        "wrong-type-imp-object.json",
        "invalid type: map, expected an array",
    ),
    (
        "wrong-type-negative-width.json",
        "invalid value: integer `-300`, expected u32",
    ),
    (
        "wrong-type-tmax-string.json",
        "invalid type: string \"120\", expected u32",
    ),
    (
        "wrong-type-width-float.json",
        "invalid type: floating point `300.5`, expected u32",
    ),
];

#[test]
fn every_malformed_file_is_refused_with_its_error() {
    let files = common::corpus("malformed");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<&str> = MALFORMED.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names, listed,
        "tests/corpus/malformed and MALFORMED must list the same files"
    );
    let mut wrong = Vec::new();
    for ((name, bytes), (_, want)) in files.iter().zip(MALFORMED) {
        let err = match codec::decode_valid(bytes) {
            Ok(v) => {
                wrong.push(format!("{name}: accepted (id {:?})", v.req().id));
                continue;
            }
            Err(e) => e,
        };
        let text = err.to_string();
        if !text.contains(want) {
            wrong.push(format!("{name}: error {text:?} does not contain {want:?}"));
        }
        // Rule failures come out as `Invalid`, everything else as `Decode`.
        let is_rule = name.starts_with("invalid-") && !name.starts_with("invalid-utf8");
        if matches!(err, RequestError::Invalid(_)) != is_rule {
            wrong.push(format!("{name}: refused by the wrong stage: {err:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The 10 MB body (generated here, not committed) is refused by length before any parsing.
#[test]
fn ten_megabyte_body_is_refused_by_length() {
    let mut body =
        br#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}],"ext":{"pad":""#.to_vec();
    body.resize(10 * 1024 * 1024 - 3, b'a');
    body.extend_from_slice(b"\"}}");
    assert_eq!(body.len(), 10 * 1024 * 1024);
    match codec::decode(&body) {
        Err(DecodeError::TooLarge { len }) => assert_eq!(len, body.len()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same shape just under the limit is accepted: the limit, not the shape, refused it.
    body.truncate(MAX_BODY_BYTES - 3);
    body.extend_from_slice(b"\"}}");
    let v = codec::decode_valid(&body).expect("under the limit");
    assert_eq!(v.id(), "r1");
}

/// Too many list entries where the list is informational: the first ones are kept, the rest
/// counted, the request stays valid.
#[test]
fn informational_lists_are_capped_not_refused() {
    let formats: Vec<String> = (1..=40)
        .map(|i| format!(r#"{{"w":{i},"h":{i}}}"#))
        .collect();
    let body = format!(
        r#"{{"id":"r","imp":[{{"id":"1","banner":{{"format":[{}]}}}}]}}"#,
        formats.join(",")
    );
    let v = codec::decode_valid(body.as_bytes()).expect("valid");
    let b = v.req().imp[0].banner.as_ref().expect("banner");
    assert_eq!(b.format.len(), 16);
    assert_eq!(b.format.dropped(), 24);
    assert_eq!(b.format[15], codec::request::Format { w: 16, h: 16 });
}

/// Nesting as deep as the body limit allows is refused by the guard, known field or not; the
/// deepest accepted nesting ([`codec::MAX_DEPTH`]) decodes on a 512 KiB thread stack in an
/// optimised build (unoptimised, the decoder's frames are ~100× larger: 512 MiB reserved).
#[test]
fn nesting_is_bounded_and_the_bound_fits_a_small_stack() {
    fn nested(head: &str, depth: usize) -> Vec<u8> {
        let mut body = head.as_bytes().to_vec();
        body.resize(head.len() + depth, b'[');
        body.resize(head.len() + 2 * depth, b']');
        body.push(b'}');
        body
    }
    let skipped = r#"{"id":"r1","imp":[{"id":"1","banner":{}}],"ext":"#;
    let known = r#"{"id":"r1","imp":"#;
    for head in [skipped, known] {
        let body = nested(head, MAX_BODY_BYTES / 2 - 64);
        assert!(body.len() <= MAX_BODY_BYTES);
        let err = codec::decode(&body).expect_err("too deep");
        assert!(matches!(err, DecodeError::TooDeep { .. }), "{err}");
    }
    // Depth MAX_DEPTH in a skipped value: the outer object is one level, `ext` holds the rest.
    let body = nested(skipped, codec::MAX_DEPTH - 1);
    let v = std::thread::Builder::new()
        .stack_size(if cfg!(debug_assertions) {
            512 << 20
        } else {
            512 << 10
        })
        .spawn(move || {
            codec::decode_valid(&body)
                .map(|v| v.id().to_owned())
                .map_err(|e| e.to_string())
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert_eq!(v.as_deref(), Ok("r1"));
}

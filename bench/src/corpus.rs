//! The request corpus: realistic OpenRTB 2.6 bid requests, deterministic from a seed.
//!
//! Request `i` of seed `s` is a pure function of `(s, i, config)` ([`Rng::for_item`]), so a corpus
//! can be streamed, regenerated or generated in pieces and stays byte-identical. User ids are
//! the id of index `n`, with `n` drawn Zipf-like from `0..users`: either `u{n}`
//! ([`UserIds::Plain`]) or the UUID-shaped id `helios-profiles load` writes for index `n`
//! ([`UserIds::Profiles`]), so requests find the profiles that tool loaded. Owned by the calling
//! thread. Must never: read the clock or the environment (determinism).

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::rng::{Rng, Zipf};

/// Smallest and largest request body the generator aims at, in bytes.
pub const MIN_BYTES: usize = 500;
pub const MAX_BYTES: usize = 8 * 1024;

/// How the user id of index `n` is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserIds {
    /// `u{n}`.
    Plain,
    /// The UUID-shaped id `helios-profiles load --seed <seed>` gives profile `n`.
    Profiles { seed: u64 },
}

impl UserIds {
    pub fn id(&self, n: u64) -> String {
        match *self {
            UserIds::Plain => format!("u{n}"),
            UserIds::Profiles { seed } => crate::profiles::user_id(seed, n),
        }
    }
}

/// What the corpus looks like. Shares are probabilities in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct CorpusConfig {
    pub seed: u64,
    /// User ids are those of indices `0..users`.
    pub users: u64,
    /// How a user id is spelled.
    pub user_ids: UserIds,
    /// Zipf exponent of the user-id draw (0 = uniform).
    pub zipf_s: f64,
    /// Share of requests from a site (the rest from an app).
    pub site_share: f64,
    /// Share of requests that carry no user id at all.
    pub anonymous_share: f64,
    /// Share of requests under GDPR (`regs.gdpr = 1` with a TCF consent string).
    pub gdpr_share: f64,
    /// Share of requests carrying a GPP string.
    pub gpp_share: f64,
    /// Share of imps in a private marketplace (with 1–3 deals).
    pub deal_share: f64,
    /// Largest number of imps per request (1–5 drawn uniformly up to this).
    pub max_imps: u32,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            seed: 1,
            users: 1_000_000,
            user_ids: UserIds::Plain,
            zipf_s: 1.0,
            site_share: 0.6,
            anonymous_share: 0.05,
            gdpr_share: 0.3,
            gpp_share: 0.2,
            deal_share: 0.2,
            max_imps: 5,
        }
    }
}

/// The request bodies of a corpus file (JSON lines, one bid request body per line, as
/// `helios-corpus` writes it), blank lines skipped, at most `limit` of them (0 = all). A file
/// without a request is an error.
pub fn read_file(path: &Path, limit: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if !line.trim().is_empty() {
            out.push(line.into_bytes());
        }
        if limit > 0 && out.len() >= limit {
            break;
        }
    }
    anyhow::ensure!(!out.is_empty(), "{} holds no requests", path.display());
    Ok(out)
}

/// Generates request `index` of the corpus `cfg` as compact JSON (keys sorted, so stable).
pub fn request(cfg: &CorpusConfig, index: u64) -> String {
    let mut r = Rng::for_item(cfg.seed, index);
    let target = log_uniform(&mut r, MIN_BYTES, MAX_BYTES);
    let is_site = r.chance(cfg.site_share);
    let id = r.uuid();
    // Small targets get a lean request: one imp, no supply chain, no extended ids.
    let lean = target < 1300;
    let n_imps = if lean {
        1
    } else {
        r.range(1, u64::from(cfg.max_imps.clamp(1, 5)))
    };
    let mut imps = Vec::with_capacity(n_imps as usize);
    for k in 0..n_imps {
        imps.push(imp(&mut r, k + 1, is_site, cfg.deal_share));
    }
    let country = *r.pick(COUNTRIES);
    let mut req = Map::new();
    req.insert("id".into(), id.into());
    req.insert("imp".into(), imps.into());
    req.insert("at".into(), (if r.chance(0.85) { 1 } else { 2 }).into());
    req.insert("tmax".into(), (r.range(2, 6) * 50).into());
    req.insert("cur".into(), json!(["USD"]));
    let pub_n = r.range(1, 5000);
    if is_site {
        let domain = format!("{}{}.example", r.pick(WORDS), pub_n % 997);
        req.insert(
            "site".into(),
            json!({
                "id": format!("s{pub_n}"),
                "domain": domain,
                "page": format!("https://{domain}/{}/{}-{}.html", r.pick(WORDS), r.pick(WORDS), r.range(1, 99999)),
                "cat": [r.pick(IAB_CATS), r.pick(IAB_CATS)],
                "publisher": {"id": format!("p{}", pub_n % 701), "name": format!("{} media", r.pick(WORDS))},
                "mobile": u8::from(r.chance(0.5)),
            }),
        );
    } else {
        let bundle = format!("com.{}.{}{}", r.pick(WORDS), r.pick(WORDS), pub_n % 389);
        req.insert(
            "app".into(),
            json!({
                "id": format!("a{pub_n}"),
                "bundle": bundle,
                "name": format!("{} {}", r.pick(WORDS), r.pick(WORDS)),
                "storeurl": format!("https://play.example/store/apps/details?id={bundle}"),
                "cat": [r.pick(IAB_CATS)],
                "ver": format!("{}.{}.{}", r.range(1, 9), r.range(0, 20), r.range(0, 99)),
                "publisher": {"id": format!("p{}", pub_n % 701)},
            }),
        );
    }
    req.insert("device".into(), device(&mut r, is_site, country));
    if !r.chance(cfg.anonymous_share) {
        let n = Zipf::new(cfg.users, cfg.zipf_s).sample(&mut r);
        req.insert("user".into(), user(&mut r, &cfg.user_ids.id(n), lean));
    }
    let gdpr = r.chance(cfg.gdpr_share);
    let mut regs = Map::new();
    regs.insert("coppa".into(), 0.into());
    if gdpr {
        regs.insert("gdpr".into(), 1.into());
        if let Some(Value::Object(u)) = req.get_mut("user") {
            u.insert("consent".into(), tcf_string(&mut r).into());
        }
    }
    if r.chance(cfg.gpp_share) {
        let mut gpp = String::from("DBABMA~");
        let n = r.range(20, 60) as usize;
        r.hex(n, &mut gpp);
        regs.insert("gpp".into(), gpp.into());
        regs.insert("gpp_sid".into(), json!([if gdpr { 2 } else { 7 }]));
    } else if !gdpr && r.chance(0.3) {
        regs.insert("us_privacy".into(), "1YNN".into());
    }
    req.insert("regs".into(), regs.into());
    let tid = r.uuid();
    let source = if lean {
        json!({"tid": tid})
    } else {
        json!({"tid": tid, "schain": {"complete": 1, "ver": "1.0", "nodes": [
            {"asi": "exchange.example", "sid": format!("{}", r.range(1000, 99999)), "hp": 1}
        ]}})
    };
    req.insert("source".into(), source);
    grow_to(&mut r, &mut req, target);
    serde_json::to_string(&Value::Object(req)).unwrap_or_default()
}

/// Log-uniform size in `[lo, hi]`: as many small requests between 0.5 and 1 KB as big ones
/// between 4 and 8 KB.
fn log_uniform(r: &mut Rng, lo: usize, hi: usize) -> usize {
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    ((l + (h - l) * r.unit()).exp() as usize).clamp(lo, hi)
}

fn imp(r: &mut Rng, n: u64, is_site: bool, deal_share: f64) -> Value {
    let mut imp = Map::new();
    imp.insert("id".into(), n.to_string().into());
    imp.insert(
        "tagid".into(),
        format!("{}-{}", r.pick(WORDS), r.range(1, 999)).into(),
    );
    imp.insert("secure".into(), 1.into());
    let floor_cents = r.range(1, 400);
    imp.insert("bidfloor".into(), json!(floor_cents as f64 / 100.0));
    imp.insert("bidfloorcur".into(), "USD".into());
    let media = r.range(0, 9);
    if media < 6 {
        let (w, h) = *r.pick(BANNER_SIZES);
        let mut formats = vec![json!({"w": w, "h": h})];
        for _ in 0..r.range(0, 2) {
            let (w2, h2) = *r.pick(BANNER_SIZES);
            if (w2, h2) != (w, h) {
                formats.push(json!({"w": w2, "h": h2}));
            }
        }
        imp.insert(
            "banner".into(),
            json!({"w": w, "h": h, "format": formats, "pos": r.range(0, 3), "battr": [13, 14]}),
        );
    } else if media < 8 {
        let (w, h) = *r.pick(&[(640u32, 480u32), (1280, 720), (1920, 1080), (320, 480)]);
        imp.insert(
            "video".into(),
            json!({
                "mimes": ["video/mp4", "video/webm", "application/javascript"],
                "minduration": 5, "maxduration": *r.pick(&[15u32, 30, 60]),
                "protocols": [2, 3, 5, 6, 7, 8], "w": w, "h": h,
                "startdelay": 0, "placement": if is_site { 1 } else { 5 }, "linearity": 1,
                "skip": u8::from(r.chance(0.5)), "playbackmethod": [1, 3], "api": [2, 7],
            }),
        );
    } else {
        let native = format!(
            r#"{{"ver":"1.2","context":{},"plcmttype":{},"assets":[{{"id":1,"required":1,"title":{{"len":90}}}},{{"id":2,"required":1,"img":{{"type":3,"wmin":1200,"hmin":627}}}},{{"id":3,"required":0,"data":{{"type":2,"len":140}}}}]}}"#,
            r.range(1, 3),
            r.range(1, 4)
        );
        imp.insert("native".into(), json!({"request": native, "ver": "1.2"}));
    }
    if r.chance(deal_share) {
        let deals: Vec<Value> = (0..r.range(1, 3))
            .map(|_| {
                json!({"id": format!("deal-{}", r.range(1, 500)),
                       "bidfloor": r.range(100, 2000) as f64 / 100.0, "bidfloorcur": "USD", "at": 1})
            })
            .collect();
        imp.insert(
            "pmp".into(),
            json!({"private_auction": u8::from(r.chance(0.3)), "deals": deals}),
        );
    }
    Value::Object(imp)
}

fn device(r: &mut Rng, is_site: bool, country: &str) -> Value {
    let mobile = !is_site || r.chance(0.5);
    let (ua, os) = if mobile {
        *r.pick(MOBILE_UAS)
    } else {
        *r.pick(DESKTOP_UAS)
    };
    let mut d = json!({
        "ua": ua, "os": os,
        "ip": format!("{}.{}.{}.0", r.range(11, 223), r.range(0, 255), r.range(0, 255)),
        "devicetype": if mobile { 4 } else { 2 },
        "language": "en",
        "js": 1,
        "geo": {"country": country, "type": 2,
                "lat": r.range(0, 9000) as f64 / 100.0, "lon": r.range(0, 18000) as f64 / 100.0 - 90.0},
    });
    if !is_site {
        d["ifa"] = r.uuid().into();
        d["lmt"] = u8::from(r.chance(0.1)).into();
        d["connectiontype"] = (*r.pick(&[2u8, 6, 7])).into();
    }
    d
}

fn user(r: &mut Rng, uid: &str, lean: bool) -> Value {
    let mut u = json!({"id": uid, "buyeruid": uid, "yob": r.range(1950, 2008)});
    if !lean {
        u["eids"] = json!([{"source": "id5-sync.example", "uids": [{"id": format!("ID5*{}", r.uuid()), "atype": 1}]}]);
    }
    u
}

/// A TCF v2-shaped consent string (base64url alphabet, realistic length). Not a valid TC string.
fn tcf_string(r: &mut Rng) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::from("CP");
    for _ in 0..r.range(80, 300) {
        s.push(*r.pick(B64) as char);
    }
    s.push_str(".YAAAAAAAAAA");
    s
}

/// Adds realistic optional blocks (block lists, user segments, keywords) until the request is
/// about `target` bytes (never above [`MAX_BYTES`]).
fn grow_to(r: &mut Rng, req: &mut Map<String, Value>, target: usize) {
    let size = |req: &Map<String, Value>| serde_json::to_string(req).map_or(0, |s| s.len());
    let mut now = size(req);
    if now >= target {
        return;
    }
    // Block lists first (up to 100 entries each), then user data segments, then keywords.
    let mut bcat = Vec::new();
    let mut badv = Vec::new();
    while now + 40 < target && (bcat.len() < 60 || badv.len() < 100) {
        if bcat.len() < 60 && r.chance(0.4) {
            bcat.push(Value::from(*r.pick(IAB_CATS)));
            now += 10;
        } else if badv.len() < 100 {
            badv.push(Value::from(format!(
                "{}{}.example",
                r.pick(WORDS),
                r.range(1, 999)
            )));
            now += 20;
        }
        if bcat.len() + badv.len() >= 160 {
            break;
        }
        if (bcat.len() + badv.len()) % 16 == 0 {
            req.insert("bcat".into(), bcat.clone().into());
            req.insert("badv".into(), badv.clone().into());
            now = size(req);
        }
    }
    req.insert("bcat".into(), bcat.into());
    req.insert("badv".into(), badv.into());
    now = size(req);
    if let Some(Value::Object(u)) = req.get_mut("user") {
        let mut data = Vec::new();
        let mut added = 0;
        while now + added + 60 < target && data.len() < 4 {
            let segs: Vec<Value> = (0..r.range(4, 16))
                .map(|_| json!({"id": format!("seg{}", r.range(1, 5000)), "value": "1"}))
                .collect();
            let d = json!({"id": format!("dp{}", r.range(1, 40)), "name": format!("{} data", r.pick(WORDS)), "segment": segs});
            added += d.to_string().len() + 1;
            data.push(d);
        }
        if !data.is_empty() {
            u.insert("data".into(), data.into());
        }
    }
    now = size(req);
    if now + 20 < target {
        let mut kw = String::new();
        while now + 20 + kw.len() + 12 < target {
            if !kw.is_empty() {
                kw.push(',');
            }
            let w: &&str = r.pick(WORDS);
            kw.push_str(w);
        }
        let holder = if req.contains_key("site") {
            "site"
        } else {
            "app"
        };
        if let Some(Value::Object(h)) = req.get_mut(holder) {
            h.insert("keywords".into(), kw.into());
        }
    }
}

const COUNTRIES: &[&str] = &[
    "USA", "USA", "USA", "DEU", "GBR", "FRA", "CAN", "JPN", "BRA", "IND", "ESP", "ITA", "NLD",
    "AUS",
];
const BANNER_SIZES: &[(u32, u32)] = &[
    (300, 250),
    (300, 250),
    (728, 90),
    (320, 50),
    (160, 600),
    (300, 600),
    (970, 250),
    (336, 280),
    (468, 60),
    (320, 100),
];
const IAB_CATS: &[&str] = &[
    "IAB1", "IAB2", "IAB3", "IAB7", "IAB8", "IAB9", "IAB12", "IAB13", "IAB17", "IAB18", "IAB19",
    "IAB20", "IAB22", "IAB1-1", "IAB2-3", "IAB9-30", "IAB17-12", "IAB19-6",
];
const WORDS: &[&str] = &[
    "news", "sport", "weather", "travel", "recipes", "finance", "games", "puzzle", "music",
    "video", "cars", "garden", "health", "style", "tech", "movies", "books", "pets", "home",
    "outdoor", "science", "photo", "chess", "radio", "maps",
];
const MOBILE_UAS: &[(&str, &str)] = &[
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36",
        "Android",
    ),
];
const DESKTOP_UAS: &[(&str, &str)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "macOS",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Linux",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corpus_file_reads_its_non_blank_lines_up_to_the_limit() {
        let path =
            std::env::temp_dir().join(format!("helios-corpus-read-{}.jsonl", std::process::id()));
        std::fs::write(
            &path,
            "{\"id\":\"a\"}\n\n  \n{\"id\":\"b\"}\n{\"id\":\"c\"}\n",
        )
        .expect("write corpus");
        let all = read_file(&path, 0).expect("read");
        assert_eq!(
            all,
            [&b"{\"id\":\"a\"}"[..], b"{\"id\":\"b\"}", b"{\"id\":\"c\"}"]
        );
        assert_eq!(read_file(&path, 2).expect("read").len(), 2);
        std::fs::write(&path, "\n \n").expect("write corpus");
        let err = read_file(&path, 0).expect_err("no requests");
        assert!(err.to_string().contains("holds no requests"), "{err}");
        std::fs::remove_file(&path).expect("remove corpus");
        assert!(read_file(&path, 0).is_err(), "a missing file is an error");
    }

    #[test]
    fn same_seed_gives_the_same_bytes_in_any_order() {
        let cfg = CorpusConfig::default();
        let forward: Vec<String> = (0..50).map(|i| request(&cfg, i)).collect();
        let backward: Vec<String> = (0..50).rev().map(|i| request(&cfg, i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        let other = CorpusConfig {
            seed: 2,
            ..cfg.clone()
        };
        assert_ne!(request(&cfg, 0), request(&other, 0));
    }

    #[test]
    fn every_request_is_valid_openrtb_within_the_size_band() {
        let cfg = CorpusConfig::default();
        let (mut site, mut app, mut deals, mut gdpr, mut gpp) = (0, 0, 0, 0, 0);
        let (mut banner, mut video, mut native) = (0, 0, 0);
        let mut sizes = Vec::new();
        for i in 0..2000 {
            let body = request(&cfg, i);
            sizes.push(body.len());
            assert!(
                body.len() <= MAX_BYTES + 200,
                "request {i}: {} bytes",
                body.len()
            );
            let v = codec::decode_valid(body.as_bytes())
                .unwrap_or_else(|e| panic!("request {i} invalid: {e}\n{body}"));
            let r = v.req();
            assert!((1..=5).contains(&r.imp.len()));
            site += usize::from(r.site.is_some());
            app += usize::from(r.app.is_some());
            gdpr += usize::from(r.gdpr() == Some(1) && r.consent().is_some());
            gpp += usize::from(r.regs.as_ref().is_some_and(|g| g.gpp.is_some()));
            for imp in r.imp.iter() {
                deals += usize::from(imp.pmp.is_some());
                banner += usize::from(imp.banner.is_some());
                video += usize::from(imp.video.is_some());
                native += usize::from(imp.native.is_some());
            }
        }
        assert_eq!(site + app, 2000);
        for (name, n) in [
            ("site", site),
            ("app", app),
            ("deals", deals),
            ("gdpr", gdpr),
            ("gpp", gpp),
            ("banner", banner),
            ("video", video),
            ("native", native),
        ] {
            assert!(n > 100, "{name}: only {n}");
        }
        sizes.sort_unstable();
        assert!(sizes[0] >= MIN_BYTES, "smallest {}", sizes[0]);
        assert!(
            sizes[sizes.len() / 10] < 1200,
            "p10 {}",
            sizes[sizes.len() / 10]
        );
        assert!(
            sizes[sizes.len() * 9 / 10] > 4000,
            "p90 {}",
            sizes[sizes.len() * 9 / 10]
        );
    }

    #[test]
    fn user_ids_come_from_the_configured_space_and_favour_low_ids() {
        let cfg = CorpusConfig {
            users: 100,
            anonymous_share: 0.0,
            ..CorpusConfig::default()
        };
        let mut counts = [0u32; 100];
        for i in 0..3000 {
            let body = request(&cfg, i);
            let v = codec::decode_valid(body.as_bytes()).expect("valid");
            let user = v.req().user.as_ref().expect("user");
            let uid = user.buyeruid.as_deref().expect("buyeruid");
            assert_eq!(user.id.as_deref(), Some(uid));
            let n: usize = uid
                .strip_prefix('u')
                .and_then(|n| n.parse().ok())
                .expect("u{n}");
            counts[n] += 1;
        }
        assert!(counts[0] > counts[50] * 5, "{counts:?}");
    }

    /// The campaigns file the benches use loads, and bids on a good share of the corpus (a full
    /// path that only no-bids would measure too little).
    #[test]
    fn bench_campaigns_load_and_bid_on_the_corpus() {
        // The crate's directory when the test runs (a binary built from another checkout
        // must read this one's file).
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        let json =
            std::fs::read(dir.join("data/campaigns.json")).expect("bench/data/campaigns.json");
        let set = shards::CompiledSet::parse(&json).expect("campaigns load");
        let mut shard = shards::Shard::new(0, set);
        let mut d = shards::Decision::default();
        let cfg = CorpusConfig::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        let mut bids = 0;
        for i in 0..500u64 {
            let body = request(&cfg, i);
            let v = codec::decode_valid(body.as_bytes()).expect("valid");
            shard.decide(&v, None, now + i * 1_000_000, &mut d);
            bids += usize::from(!d.bids.is_empty());
        }
        assert!(bids > 150, "only {bids} of 500 requests got a bid");
    }

    #[test]
    fn profile_ids_are_uuid_shaped_stable_and_distinct() {
        let ids = UserIds::Profiles { seed: 1 };
        let a = ids.id(0);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(a, crate::profiles::user_id(1, 0));
        assert_ne!(a, ids.id(1));
        assert_ne!(a, UserIds::Profiles { seed: 2 }.id(0));
        assert_eq!(UserIds::Plain.id(42), "u42");
    }
}

//! Every kind of bid request the corpus (`bench::corpus`, `helios-corpus`) holds, and every
//! no-bid reason a warm server can reach, generated deterministically for the zero-allocation
//! test through the real binary (`tests/server.rs`). The bench crate depends on this one, so its
//! generator cannot be used here; this one mirrors its shapes: site and app; banner (with
//! `format` lists), video, native and audio imps, 1–5 per request; deals; TCF consent strings,
//! US privacy, and GPP strings that are new on every request (the verdict cache misses); block
//! lists, user segments and keywords up to ~8 KB; gzip bodies; the trace header from an exchange
//! that may not trace. Owned by the test thread.

#![allow(dead_code)]

/// Campaigns for [`request`]: every creative format, every click-macro form in markup that
/// needs JSON escaping, and campaigns whose only outcome is a given no-bid reason.
pub const CAMPAIGNS: &str = r#"{"version":1,"campaigns":[
  {"id":1,"advertiser_id":10,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000000,"pacing":"asap",
   "targeting":{"countries":["USA","DEU"]},
   "creatives":[
    {"id":11,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],"cat":["IAB2"],
     "adm":"<a ping=\"${HELIOS_CLICK_URL_HTML}\" href=\"https://shoes.example/c\">\n\t<img src=\"https://cdn.example/11.png\"></a>"},
    {"id":12,"format":{"type":"banner","w":728,"h":90},"adomain":["shoes.example"],
     "adm":"<img src=\"https://r.example/c?u=${HELIOS_CLICK_URL_ENC}\">"},
    {"id":13,"format":{"type":"video"},"adomain":["shoes.example"],
     "adm":"<VAST version=\"4.0\"><Ad><InLine><Creatives><Creative><Linear><VideoClicks><ClickTracking><![CDATA[${HELIOS_CLICK_URL}]]></ClickTracking></VideoClicks></Linear></Creative></Creatives></InLine></Ad></VAST>"},
    {"id":14,"format":{"type":"native"},"adomain":["shoes.example"],
     "adm":"{\"native\":{\"ver\":\"1.2\",\"assets\":[{\"id\":1,\"title\":{\"text\":\"Shoes \\\"now\\\"\"}}],\"link\":{\"url\":\"https://shoes.example/\",\"clicktrackers\":[\"${HELIOS_CLICK_URL}\"]}}}"}]},
  {"id":2,"advertiser_id":20,"status":"active","bid_cpm_micros":1000000,"total_budget_micros":1000000000000,"pacing":"asap",
   "targeting":{"countries":["DEU"]},
   "creatives":[{"id":21,"format":{"type":"banner","w":320,"h":50},"adomain":["a.example"],"adm":"<img src=\"https://cdn.example/21.png\">"}]},
  {"id":3,"advertiser_id":30,"status":"active","bid_cpm_micros":1000000,"total_budget_micros":1000000000000,"pacing":"asap",
   "targeting":{"countries":["FRA"],"segments":[512],"min_segment_weight":1},
   "creatives":[{"id":31,"format":{"type":"banner","w":160,"h":600},"adm":"<img src=\"https://cdn.example/31.png\">"}]},
  {"id":4,"advertiser_id":40,"status":"active","targeting":{"countries":["USA","DEU"]},"bid_cpm_micros":1000000,"total_budget_micros":1000000000000,"pacing":"asap",
   "frequency_cap":{"impressions":3,"window_s":3600},
   "creatives":[{"id":41,"format":{"type":"banner","w":300,"h":600},"adm":"<img src=\"https://cdn.example/41.png\">"}]},
  {"id":5,"advertiser_id":50,"status":"active","targeting":{"countries":["USA","DEU"]},"bid_cpm_micros":1000000,"total_budget_micros":3000,"pacing":"asap",
   "creatives":[{"id":51,"format":{"type":"banner","w":970,"h":250},"adm":"<img src=\"https://cdn.example/51.png\">"}]},
  {"id":6,"advertiser_id":60,"status":"active","targeting":{"countries":["USA","DEU"]},"bid_cpm_micros":1000000,"total_budget_micros":1000000000000,
   "daily_budget_micros":1000,"pacing":"even",
   "creatives":[{"id":61,"format":{"type":"banner","w":468,"h":60},"adm":"<img src=\"https://cdn.example/61.png\">"}]}
]}"#;

/// The no-bid reasons [`request`] reaches once warm (`not_ready` happens only before the first
/// campaigns load; `overloaded` comes from the pipelined burst of the test itself).
pub const REASONS: &[&str] = &[
    "no_eligible_campaign",
    "no_consent",
    "blocked",
    "frequency_capped",
    "below_floor",
    "paced",
    "budget_exhausted",
    "unsupported_currency",
    "deadline",
    "invalid_request",
];

/// Deterministic small generator (xorshift), as the corpus's.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| b"0123456789abcdef"[self.below(16) as usize] as char)
            .collect()
    }
}

const WORDS: &[&str] = &[
    "news", "sport", "weather", "travel", "recipes", "finance", "games", "puzzle", "music",
    "video", "cars", "garden", "health", "style", "tech",
];
const SIZES: &[(u32, u32)] = &[
    (300, 250),
    (300, 250),
    (728, 90),
    (320, 50),
    (160, 600),
    (300, 600),
    (970, 250),
    (468, 60),
    (200, 200),
];
const UAS: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
];

/// The kind of request `i` is (for coverage checks), and its path, body and extra headers.
pub struct Req {
    pub kind: &'static str,
    pub path: String,
    pub body: Vec<u8>,
    pub headers: String,
    pub gzip: bool,
}

fn imp(r: &mut Rng, n: usize, media: u64, floor: f64) -> String {
    let mut s = format!(
        r#"{{"id":"{n}","tagid":"{}-{}","secure":1,"bidfloor":{floor},"bidfloorcur":"USD""#,
        r.pick(WORDS),
        r.below(999)
    );
    match media {
        0 => {
            let (w, h) = *r.pick(SIZES);
            let (w2, h2) = *r.pick(SIZES);
            s += &format!(
                r#","banner":{{"w":{w},"h":{h},"format":[{{"w":{w},"h":{h}}},{{"w":{w2},"h":{h2}}}],"pos":1,"battr":[13,14]}}"#
            );
        }
        1 => {
            s += r#","video":{"mimes":["video/mp4","video/webm"],"minduration":5,"maxduration":30,"protocols":[2,3,5,6],"w":640,"h":480,"startdelay":0,"placement":1,"linearity":1,"skip":1,"playbackmethod":[1,3],"api":[2,7]}"#;
        }
        2 => {
            s += r#","native":{"request":"{\"ver\":\"1.2\",\"context\":1,\"plcmttype\":1,\"assets\":[{\"id\":1,\"required\":1,\"title\":{\"len\":90}}]}","ver":"1.2"}"#;
        }
        _ => {
            s += r#","audio":{"mimes":["audio/mp4"],"minduration":5,"maxduration":30}"#;
        }
    }
    if r.chance(0.2) {
        s += &format!(
            r#","pmp":{{"private_auction":0,"deals":[{{"id":"deal-{}","bidfloor":0.5,"bidfloorcur":"USD","at":1}}]}}"#,
            r.below(500)
        );
    }
    s.push('}');
    s
}

/// Request `i`: its kind cycles so every kind and reason appears in every 100 requests, and
/// its random parts (ids, GPP strings, sizes) never repeat.
pub fn request(i: usize) -> Req {
    let mut r = Rng::new(i as u64 + 1);
    let id = format!("{}-{}", r.hex(8), i);
    let kind_n = i % 25;
    let site = kind_n % 5 != 1;
    let n_imps = if kind_n.is_multiple_of(4) {
        1 + r.below(5) as usize
    } else {
        1
    };
    let media = match kind_n {
        3 => 1,
        7 => 2,
        11 => 3,
        _ => 0,
    };
    let mut kind = match media {
        1 => "video",
        2 => "native",
        3 => "audio",
        _ if n_imps > 1 => "multi-imp",
        _ if !site => "app",
        _ => "banner",
    };
    let mut floor = (r.below(100) as f64) / 100.0;
    let mut country = "USA";
    let mut extra_top = String::new();
    let mut tmax = 200;
    let mut user = format!(
        r#"{{"id":"user-{}","buyeruid":"user-{}","yob":1980}}"#,
        i % 97,
        i % 97
    );
    let mut regs = r#"{"coppa":0"#.to_string();
    match kind_n {
        // below_floor: a floor above every campaign's price.
        5 => {
            floor = 50.0;
            kind = "below_floor";
        }
        // blocked: the only campaign of the size blocks on category and advertiser.
        6 => {
            extra_top += r#","bcat":["IAB2"],"badv":["shoes.example"]"#;
            kind = "blocked";
        }
        // unsupported_currency.
        9 => {
            extra_top += r#","cur":["EUR"]"#;
            kind = "unsupported_currency";
        }
        // deadline: tmax no larger than the network margin.
        10 => {
            tmax = 10;
            kind = "deadline";
        }
        // Country-targeted campaign elsewhere.
        13 => country = "DEU",
        // no_consent: the only campaign for France targets segments (needs a profile).
        12 => {
            country = "FRA";
            kind = "no_consent";
        }
        // GDPR with an unreadable TCF string (contextual bid, no user id).
        14 => {
            regs += r#","gdpr":1"#;
            user = format!(r#"{{"id":"user-{i}","consent":"CP{}"}}"#, r.hex(40));
            kind = "gdpr";
        }
        // GPP, new on every request: sections that do not apply, and US national opted out.
        15 | 16 => {
            let gpp = if kind_n == 15 {
                let n = 20 + r.below(40) as usize;
                format!("DBABMA~{}", r.hex(n))
            } else {
                format!("DBABLA~BVVVVVVVVWA{}", r.hex(6))
            };
            regs += &format!(r#","gpp":"{gpp}","gpp_sid":[7]"#);
            kind = "gpp";
        }
        17 => {
            regs += r#","us_privacy":"1YYN""#;
            kind = "us_privacy";
        }
        _ => {}
    }
    regs.push('}');
    let imps: Vec<String> = (0..n_imps)
        .map(|k| {
            let m = if n_imps > 1 { r.below(4) } else { media };
            imp(&mut r, k + 1, m, floor)
        })
        .collect();
    let inventory = if site {
        let d = format!("{}{}.example", r.pick(WORDS), r.below(997));
        format!(
            r#""site":{{"id":"s{i}","domain":"{d}","page":"https://{d}/{}.html","cat":["IAB1","IAB9-30"],"publisher":{{"id":"p{}"}}}}"#,
            r.pick(WORDS),
            r.below(700)
        )
    } else {
        format!(
            r#""app":{{"id":"a{i}","bundle":"com.{}.app{}","cat":["IAB9"],"ver":"1.2.3","publisher":{{"id":"p{}"}}}}"#,
            r.pick(WORDS),
            r.below(389),
            r.below(700)
        )
    };
    // Big requests: block lists, user data segments and keywords, up to ~8 KB.
    if kind_n % 3 == 2 {
        let badv: Vec<String> = (0..40 + r.below(60))
            .map(|_| format!(r#""{}{}.example""#, r.pick(WORDS), r.below(999)))
            .collect();
        extra_top += &format!(r#","bcat":["IAB25","IAB26"],"badv":[{}]"#, badv.join(","));
        let segs: Vec<String> = (0..4 + r.below(12))
            .map(|_| format!(r#"{{"id":"seg{}","value":"1"}}"#, r.below(5000)))
            .collect();
        user = user.trim_end_matches('}').to_string()
            + &format!(
                r#","data":[{{"id":"dp1","name":"data","segment":[{}]}}]}}"#,
                segs.join(",")
            );
        let kw: Vec<&str> = (0..100 + r.below(300)).map(|_| *r.pick(WORDS)).collect();
        extra_top += &format!(r#","ext":{{"keywords":"{}"}}"#, kw.join(","));
    }
    let body = format!(
        r#"{{"id":"{id}","imp":[{}],"at":1,"tmax":{tmax},{inventory},"device":{{"ua":"{}","ip":"10.{}.{}.0","devicetype":4,"os":"iOS","geo":{{"country":"{country}","lat":1.5,"lon":2.5}}}},"user":{user},"regs":{regs},"source":{{"tid":"{}","schain":{{"complete":1,"ver":"1.0","nodes":[{{"asi":"exchange.example","sid":"{}","hp":1}}]}}}}{extra_top}}}"#,
        imps.join(","),
        r.pick(UAS),
        r.below(255),
        r.below(255),
        r.hex(32),
        r.below(99999),
    );
    let mut path = "/openrtb2/bid/adx".to_string();
    let mut headers = String::new();
    // The trace header from an exchange not allowed to trace: the normal path.
    if kind_n == 18 {
        headers += "X-Helios-Trace: 1\r\n";
        path = "/openrtb2/bid/other".into();
        kind = "trace-refused";
    }
    // Invalid requests: broken rules (a negative floor, no id), ids too long for a notice URL.
    // (Malformed JSON is left out: the decoder, sonic-rs, allocates its error message;
    // codec/tests/alloc.rs bounds that.)
    let body = match kind_n {
        19 => {
            kind = "invalid";
            match i % 3 {
                0 => body
                    .replacen(r#""bidfloor":"#, r#""bidfloor":-1"#, 1)
                    .into_bytes(),
                1 => br#"{"imp":[{"id":"1","banner":{"w":300,"h":250}}]}"#.to_vec(),
                _ => body.replacen(&id, &"x".repeat(800), 1).into_bytes(),
            }
        }
        _ => body.into_bytes(),
    };
    let gzip = matches!(kind_n, 20 | 22 | 23);
    if gzip {
        headers += "Content-Encoding: gzip\r\n";
    }
    Req {
        kind: if gzip { "gzip" } else { kind },
        path,
        body,
        headers,
        gzip,
    }
}

//! Synthetic campaign sets and bid requests for benchmarks, allocation tests and simulations.
//!
//! Deterministic for a seed. The mix aims at realistic index selectivity: most campaigns target
//! one to three of twenty countries, some target device types, OS, domains, segments, deals and
//! day-parts; creatives use the common IAB sizes. Not used on the bidding path.

use crate::{CompiledSet, LeaseGrant, LoadError, Shard, ShardConfig};

/// A tiny deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

pub const COUNTRIES: [&str; 20] = [
    "USA", "DEU", "FRA", "GBR", "ITA", "ESP", "NLD", "POL", "SWE", "CAN", "BRA", "MEX", "JPN",
    "IND", "AUS", "BEL", "AUT", "CHE", "DNK", "IRL",
];
pub const SIZES: [(u32, u32); 8] = [
    (300, 250),
    (728, 90),
    (320, 50),
    (160, 600),
    (300, 600),
    (970, 250),
    (336, 280),
    (468, 60),
];
const OS: [&str; 4] = ["ios", "android", "windows", "macos"];

fn pick<'a>(r: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[r.below(xs.len() as u64) as usize]
}

/// A campaigns file (JSON) with `n` active campaigns.
pub fn campaigns_json(n: usize, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let mut out = String::with_capacity(n * 400);
    out.push_str(r#"{"version":1,"advertisers":[{"id":1,"utc_offset_minutes":0,"campaigns":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let mut t = Vec::new();
        if !r.chance(15) {
            let k = 1 + r.below(3);
            let cs: Vec<String> = (0..k)
                .map(|_| format!("\"{}\"", pick(&mut r, &COUNTRIES)))
                .collect();
            t.push(format!(r#""countries":[{}]"#, cs.join(",")));
        }
        if r.chance(40) {
            t.push(format!(r#""device_types":[{}]"#, 1 + r.below(7)));
        }
        if r.chance(25) {
            t.push(format!(r#""os":["{}"]"#, pick(&mut r, &OS)));
        }
        if r.chance(10) {
            t.push(format!(
                r#""domains_allow":["site{}.example","site{}.example"]"#,
                r.below(1000),
                r.below(1000)
            ));
        }
        if r.chance(5) {
            t.push(format!(
                r#""domains_deny":["site{}.example"]"#,
                r.below(1000)
            ));
        }
        if r.chance(15) {
            t.push(format!(r#""segments":[{},{}]"#, r.below(50), r.below(50)));
        }
        if r.chance(5) {
            t.push(format!(r#""deals":["deal-{}"]"#, r.below(20)));
        }
        if r.chance(10) {
            t.push(format!(
                r#""dayparts":[{{"start_hour":{},"end_hour":24}}]"#,
                r.below(12)
            ));
        }
        let mut extra = String::new();
        if r.chance(10) {
            extra.push_str(r#","frequency_cap":{"impressions":3,"window_s":86400}"#);
        }
        if r.chance(20) {
            extra.push_str(&format!(
                r#","max_cpm_micros":9000000,"segment_multipliers":[{{"segment":{},"multiplier_bp":15000}}]"#,
                r.below(50)
            ));
        }
        let mut creatives = Vec::new();
        for k in 0..(1 + r.below(3)) {
            let f = match r.below(10) {
                0 => r#"{"type":"video"}"#.to_string(),
                1 => r#"{"type":"native"}"#.to_string(),
                _ => {
                    let (w, h) = SIZES[r.below(SIZES.len() as u64) as usize];
                    format!(r#"{{"type":"banner","w":{w},"h":{h}}}"#)
                }
            };
            creatives.push(format!(
                r#"{{"id":{k},"format":{f},"adomain":["brand{}.example"],"cat":["IAB{}-{}"],"attr":[{}],"adm":"<a href='https://brand.example'>ad</a>"}}"#,
                r.below(500),
                1 + r.below(26),
                1 + r.below(5),
                1 + r.below(16)
            ));
        }
        out.push_str(&format!(
            r#"{{"id":{id},"status":"active","bid_cpm_micros":{cpm},"total_budget_micros":100000000000,"pacing":"asap"{extra},"targeting":{{{t}}},"creatives":[{c}]}}"#,
            id = i + 1,
            cpm = 500_000 + r.below(4_500_000),
            t = t.join(","),
            c = creatives.join(",")
        ));
    }
    out.push_str("]}]}");
    out
}

/// `k` bid request bodies: site and app, one or two imps, varied geo/device, some floors, blocks,
/// deals, consent strings.
pub fn requests(k: usize, seed: u64) -> Vec<String> {
    let mut r = Rng(seed | 1);
    (0..k)
        .map(|i| {
            let (w, h) = SIZES[r.below(SIZES.len() as u64) as usize];
            let mut imp = format!(
                r#"{{"id":"1","banner":{{"w":{w},"h":{h},"battr":[{}]}},"bidfloor":{}.{:02}"#,
                1 + r.below(16),
                r.below(2),
                r.below(100)
            );
            if r.chance(5) {
                imp.push_str(&format!(r#","pmp":{{"deals":[{{"id":"deal-{}"}}]}}"#, r.below(20)));
            }
            imp.push('}');
            if r.chance(20) {
                imp.push_str(r#",{"id":"2","video":{"mimes":["video/mp4"]},"secure":1}"#);
            }
            let inv = if r.chance(70) {
                format!(
                    r#""site":{{"domain":"site{}.example","cat":["IAB{}"]}}"#,
                    r.below(1000),
                    1 + r.below(26)
                )
            } else {
                format!(r#""app":{{"bundle":"com.example.app{}"}}"#, r.below(500))
            };
            let regs = match r.below(10) {
                0 => r#","regs":{"gdpr":1},"user":{"id":"u","consent":"COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"}"#.to_string(),
                1 => r#","regs":{"us_privacy":"1YNN"}"#.to_string(),
                2 => r#","regs":{"gpp":"DBABLA~BAAAAAAAAQA","gpp_sid":[7]}"#.to_string(),
                _ => format!(r#","user":{{"id":"user-{}"}}"#, r.below(100_000)),
            };
            format!(
                r#"{{"id":"req-{i}","imp":[{imp}],{inv},"device":{{"devicetype":{},"os":"{}","geo":{{"country":"{}"}}}},"bcat":["IAB{}"]{regs}}}"#,
                1 + r.below(7),
                pick(&mut r, &OS),
                pick(&mut r, &COUNTRIES),
                1 + r.below(26),
            )
        })
        .collect()
}

/// Core 0's shard over `n` synthetic campaigns ([`campaigns_json`] with seed 7), ticked at `now_ns`,
/// budgets enforced or not, and every campaign granted a lease of `lease` micros: the set-up of
/// the decision benches, the allocation test and `helios-owntime`. Errs only if the synthetic
/// set does not compile.
pub fn leased_shard(
    n: usize,
    enforce_budget: bool,
    lease: i64,
    now_ns: u64,
) -> Result<Shard, LoadError> {
    let set = CompiledSet::parse(campaigns_json(n, 7).as_bytes())?;
    let cfg = ShardConfig {
        enforce_budget,
        ..ShardConfig::default()
    };
    let mut s = Shard::with_config(0, set, cfg);
    s.tick(now_ns);
    let ids: Vec<u32> = s.set().compiled.iter().map(|c| c.id).collect();
    for id in ids {
        s.lease_granted(&LeaseGrant {
            campaign_id: id,
            granted: lease,
            balance: lease,
            remote_spent: 0,
        });
    }
    Ok(s)
}

//! The sans-IO core alone, bytes in → bytes out, no sockets: what one bid request costs a core
//! on the full path (HTTP parse, decode, validate, decide, encode, three signed notice URLs, the
//! bid event) against the `--null` path (HTTP parse, 204), plus the gzip variant.
//!
//! `cargo bench -p helios-appliance --bench core`

use std::time::Duration;

use appliance::core::{Conn, Core, CoreConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use shards::CompiledSet;

#[path = "../tests/support/core_setup.rs"]
mod core_setup;

const SET: &str = r#"{"version":1,"campaigns":[
 {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000000,
  "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],"adm":"<a href=\"https://shoes.example/c\"><img src=\"https://cdn.shoes.example/300x250.png\"></a>"}]},
 {"id":8,"advertiser_id":80,"status":"active","bid_cpm_micros":1500000,"total_budget_micros":1000000000000,"countries":["DEU"],
  "creatives":[{"id":81,"format":{"type":"banner","w":728,"h":90},"adm":"<a>b</a>"}]}]}"#;

/// The same request as appliance/bench/wrk.sh.
const BODY: &str = r#"{"id":"0b7a1c2e-5d3f-4c1a-9e8b-6f2d4a1b3c5d","imp":[{"id":"1","banner":{"w":300,"h":250,"format":[{"w":300,"h":250},{"w":320,"h":50}]},"bidfloor":0.5,"bidfloorcur":"USD","tagid":"slot-1","secure":1}],"site":{"id":"s1","domain":"news.example","cat":["IAB12"],"page":"https://news.example/a/1","publisher":{"id":"p1"}},"device":{"ua":"Mozilla/5.0 (X11; Linux x86_64)","ip":"203.0.113.7","devicetype":2,"os":"Linux","geo":{"country":"FRA","city":"Paris"}},"user":{"id":"u-42"},"at":1,"tmax":120,"cur":["USD"]}"#;

fn core(null_mode: bool) -> (Core, Conn) {
    let cfg = CoreConfig {
        null_mode,
        conn_out_capacity: 16 * 1024,
        ..core_setup::config()
    };
    core_setup::core(
        cfg,
        CompiledSet::parse(SET.as_bytes()).expect("valid campaigns"),
        None,
    )
}

fn request(body: &[u8], extra: &str) -> Vec<u8> {
    let mut v = format!(
        "POST /openrtb2/bid/bench HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn bench(c: &mut Criterion) {
    let plain = request(BODY.as_bytes(), "");
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(BODY.as_bytes()).expect("in memory");
        request(
            &e.finish().expect("in memory"),
            "Content-Encoding: gzip\r\n",
        )
    };
    for (name, null_mode, req) in [
        ("core/null", true, &plain),
        ("core/full", false, &plain),
        ("core/full_gzip", false, &gz),
    ] {
        let (mut core, mut conn) = core(null_mode);
        c.bench_function(name, |b| {
            b.iter(|| {
                core.begin_turn();
                assert!(conn.push(req));
                core.on_input(&mut conn);
                assert!(!conn.out.is_empty());
                conn.out.clear();
            })
        });
        let m = core.metrics();
        assert_eq!(m.bids > 0, !null_mode, "the full path bids");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

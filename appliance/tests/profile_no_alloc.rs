//! The warm bid path with a profile replica allocates nothing, in every profile order (the
//! prefetch right after the privacy verdict, the lookup inside the decision): a counting global
//! allocator watches this thread while one core per order decides the same requests — users
//! found, absent, without consent — through `Core::on_input`. (The server-level test,
//! tests/server.rs `warm_requests_allocate_nothing_on_core_threads`, runs without a replica.)

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use appliance::core::ProfileOrder;
use shards::CompiledSet;

#[path = "support/core_setup.rs"]
mod core_setup;

#[global_allocator]
static GLOBAL: appliance::alloc_count::CountingAlloc = appliance::alloc_count::CountingAlloc;

const SET: &str = r#"{"version":1,"campaigns":[
  {"id":20,"advertiser_id":2,"status":"active","bid_cpm_micros":6000000,"total_budget_micros":1000000000000,
   "targeting":{"segments":[42],"min_segment_weight":500},
   "creatives":[{"id":201,"format":{"type":"banner","w":300,"h":250},"adm":"<a>20</a>"}]},
  {"id":21,"advertiser_id":2,"status":"active","bid_cpm_micros":2000000,"max_cpm_micros":5000000,
   "segment_multipliers":[{"segment":43,"multiplier_bp":20000}],"total_budget_micros":1000000000000,
   "creatives":[{"id":211,"format":{"type":"banner","w":300,"h":250},"adm":"<a>21</a>"}]},
  {"id":22,"advertiser_id":2,"status":"active","bid_cpm_micros":5500000,"total_budget_micros":1000000000000,
   "targeting":{"segments":[44]},"frequency_cap":{"impressions":2,"window_s":86400},
   "creatives":[{"id":221,"format":{"type":"banner","w":300,"h":250},"adm":"<a>22</a>"}]}]}"#;

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /openrtb2/bid HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn warm_bids_with_a_replica_allocate_nothing_in_any_profile_order() {
    assert!(appliance::alloc_count::installed());
    let (mut store, reader) = profile_cache::Store::new(5000, 3_600_000);
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600) as u32;
    for i in 0..5000u32 {
        let mut p = profile_cache::ProfileData {
            user_id: format!("0b8f2c1e-7d9a-4c61-9a53-{i:012}"),
            segments: vec![(42, (i % 1001) as u16), (43, 700), (44, 10)],
            ..Default::default()
        };
        p.freq.push(profile_cache::FreqBucket {
            campaign: 22,
            hour,
            count: i % 3,
        });
        store.upsert(&mut p).unwrap();
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    store.mark_synced(now_ms);
    let reqs: Vec<Vec<u8>> = (0..6000u32)
        .map(|i| {
            let user = match i % 5 {
                0 => format!(r#""user":{{"id":"0b8f2c1e-7d9a-4c61-9a53-{:012}"}}"#, i % 5000),
                1 => format!(r#""user":{{"buyeruid":"0b8f2c1e-7d9a-4c61-9a53-{:012}"}}"#, i % 5000),
                2 => format!(r#""device":{{"ifa":"absent-{i}"}}"#),
                3 => format!(r#""user":{{"id":"0b8f2c1e-7d9a-4c61-9a53-{:012}"}},"regs":{{"coppa":1}}"#, i % 5000),
                _ => format!(r#""user":{{"id":"0b8f2c1e-7d9a-4c61-9a53-{:012}"}}"#, (i * 7) % 5000),
            };
            post(&format!(
                r#"{{"id":"r-{i}","imp":[{{"id":"1","banner":{{"w":300,"h":250}}}}],"tmax":100,{user}}}"#
            ))
        })
        .collect();
    for order in [
        ProfileOrder::Eager,
        ProfileOrder::Late,
        ProfileOrder::Prefetch,
        ProfileOrder::PrefetchSlot,
    ] {
        let (mut core, mut conn) = core_setup::core(
            core_setup::config(),
            CompiledSet::parse(SET.as_bytes()).unwrap(),
            Some(reader.clone()),
        );
        core.set_profile_order(order);
        let mut run = |reqs: &[Vec<u8>]| {
            for r in reqs {
                core.begin_turn();
                assert!(conn.push(r));
                core.on_input(&mut conn);
                assert!(!conn.out.is_empty());
                conn.out.clear();
            }
        };
        run(&reqs[..1000]);
        let before = appliance::alloc_count::thread_allocs();
        run(&reqs[1000..]);
        let after = appliance::alloc_count::thread_allocs();
        assert_eq!(after - before, 0, "{order:?}: allocations on the warm path");
        let m = core.metrics();
        assert!(m.bids > 3000, "{order:?}: most requests bid ({})", m.bids);
    }
}

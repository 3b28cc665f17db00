//! Zero allocations per decision once warm: a counting global allocator around `decide` over a
//! mixed request stream (site/app, multi-imp, deals, blocks, TCF, US privacy, GPP, profiles,
//! budgets enforced), and GPP strings never seen before (the verdict cache misses). The counter
//! is per thread, so the tests may run in parallel.

#![allow(clippy::unwrap_used)] // fixed test data

use shards::{CompiledSet, Decision, ProfileView, Shard};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

struct P;
impl ProfileView for P {
    fn segment_weight(&self, s: u32) -> Option<u16> {
        s.is_multiple_of(3).then_some(700)
    }
    fn impressions_since(&self, c: u32, _: u64) -> u32 {
        c % 4
    }
}

#[test]
fn zero_allocations_per_decision_once_warm() {
    assert!(
        alloc_count::installed(),
        "the counting allocator must be installed"
    );
    let now = 1_795_435_200_000_000_000u64;
    let mut shard = shards::synth::leased_shard(1000, true, 1 << 40, now).unwrap();
    let bodies = shards::synth::requests(2000, 11);
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).unwrap())
        .collect();
    let mut d = Decision::default();
    let profile = P;
    // Warm-up: every request once (fills the GPP verdict cache).
    for (i, r) in reqs.iter().enumerate() {
        let p: Option<&dyn ProfileView> = if i % 2 == 0 { Some(&profile) } else { None };
        shard.decide(r, p, now, &mut d);
    }
    let before = alloc_count::thread_allocs();
    let mut bids = 0;
    for round in 0..5 {
        for (i, r) in reqs.iter().enumerate() {
            let p: Option<&dyn ProfileView> = if (i + round) % 2 == 0 {
                Some(&profile)
            } else {
                None
            };
            shard.decide(r, p, now, &mut d);
            bids += d.bids.len();
        }
    }
    let after = alloc_count::thread_allocs();
    assert!(
        bids > 1000,
        "the stream must exercise bidding, got {bids} bids"
    );
    assert_eq!(
        after - before,
        0,
        "allocations during 10,000 warm decisions"
    );
}

/// GPP strings the shard has never seen (so its verdict cache misses and the string is read):
/// every section kind, valid and not, through `gpp::allows` and through a whole decision.
#[test]
fn unseen_gpp_strings_allocate_nothing() {
    assert!(alloc_count::installed());
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut strings = Vec::new();
    for i in 0..4000usize {
        let tail: String = (0..8)
            .map(|k| b64[(i * 7 + k * 13 + i / 64) % 64] as char)
            .collect();
        strings.push(match i % 6 {
            // TCF EU v2 section (the corpus's shape): our TCF reader decides.
            0 => format!("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA{tail}"),
            // US national, opted out; the extra characters are bits past the fields.
            1 => format!("DBABLA~BVVVVVVVVWA{tail}"),
            // California.
            2 => format!("DBABBg~BVVVVVVY{tail}"),
            // US privacy inside GPP.
            3 => format!("DBABTA~1{}NN{tail}", if i % 4 == 0 { 'Y' } else { 'N' }),
            // Garbage after a valid header, and garbage headers.
            4 => format!("DBABLA~{tail}.{tail}"),
            _ => format!("{tail}~{tail}"),
        });
    }
    let sids: [&[u16]; 4] = [&[], &[2], &[7, 8], &[6]];
    let mut allowed = 0;
    let (n, ()) = alloc_count::count(|| {
        for (i, g) in strings.iter().enumerate() {
            allowed += usize::from(shards::gpp::allows(g, sids[i % 4], 755));
        }
    });
    assert_eq!(n, 0, "allocations reading 4,000 GPP strings");
    assert!(allowed > 100 && allowed < 3900, "{allowed}");

    // Through the shard: each request carries a GPP string its cache has not seen.
    let set = CompiledSet::parse(shards::synth::campaigns_json(100, 7).as_bytes()).unwrap();
    let mut shard = Shard::new(0, set);
    let now = 1_795_435_200_000_000_000u64;
    let bodies: Vec<String> = strings
        .iter()
        .map(|g| {
            format!(
                r#"{{"id":"r","imp":[{{"id":"1","banner":{{"w":300,"h":250}}}}],"regs":{{"gpp":"{g}","gpp_sid":[7]}},"user":{{"id":"u1"}}}}"#
            )
        })
        .collect();
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).unwrap())
        .collect();
    let mut d = Decision::default();
    // Warm the decision's own buffers on a request without GPP first.
    let plain = codec::decode_valid(br#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}]}"#)
        .unwrap();
    shard.decide(&plain, None, now, &mut d);
    let (n, ()) = alloc_count::count(|| {
        for r in &reqs {
            shard.decide(r, None, now, &mut d);
        }
    });
    assert_eq!(
        n, 0,
        "allocations deciding 4,000 requests with unseen GPP strings"
    );
    assert!(shard.privacy(&reqs[1]) != shards::Privacy::Personalized);
}

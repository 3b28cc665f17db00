//! A lookup allocates nothing: a counting global allocator watches this thread while it reads
//! profiles (hits, misses, every ProfileView method; plain and prefetched lookups) from a filled
//! replica.

use profile_cache::{FreqBucket, ProfileData, Store};
use shards::ProfileView;

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

#[test]
fn lookups_and_profile_reads_never_allocate() {
    assert!(
        alloc_count::installed(),
        "the counting allocator must be installed"
    );
    let (mut store, reader) = Store::new(10_000, 1000);
    let ids: Vec<String> = (0..10_000).map(|i| format!("user-{i:08}")).collect();
    let mut p = ProfileData::default();
    for (i, id) in ids.iter().enumerate() {
        p.clear();
        p.user_id.push_str(id);
        p.segments
            .extend((0..20u32).map(|s| (s * 3 + i as u32 % 7, 100)));
        p.freq.push(FreqBucket {
            campaign: 9,
            hour: 490_000,
            count: 2,
        });
        store.upsert(&mut p).expect("valid profile");
    }
    store.mark_synced(1);
    let absent: Vec<String> = (0..1000).map(|i| format!("nobody-{i}")).collect();
    let r = reader.clone();

    let before = alloc_count::thread_allocs();
    let mut sum = 0u64;
    for _ in 0..3 {
        for id in &ids {
            let p = r.get(id).expect("present");
            sum += u64::from(p.segment_weight(3).unwrap_or(0));
            sum += u64::from(p.impressions_since(9, 0));
            sum += p.segments().map(|s| u64::from(s.1)).sum::<u64>();
            sum += u64::from(p.last_seen().unwrap_or(0));
        }
        for id in &absent {
            sum += u64::from(r.get(id).is_some());
        }
        // The early lookup (prefetch, record prefetch, lookup by token), hits and misses.
        for id in ids.iter().step_by(3).chain(absent.iter()) {
            let t = r.prefetch(id);
            r.prefetch_record(&t);
            sum += r
                .get_prefetched(t)
                .map_or(1, |p| u64::from(p.segment_weight(3).unwrap_or(0)));
        }
        sum += u64::from(r.is_fresh_at(2)) + u64::from(r.is_loaded());
    }
    let after = alloc_count::thread_allocs();
    assert_eq!(after - before, 0, "allocations during lookups");
    assert!(sum > 0);
}

/// The packed layout against the obvious rkyv archive of the same profile (the alternative the
/// design considered): the archive is larger, and reading it without validating every lookup
/// would need the same `unsafe` trust as the packed layout.
#[test]
fn packed_record_is_smaller_than_the_rkyv_archive_of_the_same_profile() {
    #[derive(rkyv::Archive, rkyv::Serialize)]
    struct RkyvProfile {
        user_id: String,
        segment_ids: Vec<u32>,
        segment_weights: Vec<u16>,
        birth_year: u16,
        gender: u8,
        last_seen: u32,
        freq: Vec<(u32, u32, u32)>,
    }
    let id = "0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a10".to_string();
    let segs: Vec<(u32, u16)> = (0..20).map(|i| (i * 37, 500)).collect();
    let r = RkyvProfile {
        user_id: id.clone(),
        segment_ids: segs.iter().map(|s| s.0).collect(),
        segment_weights: segs.iter().map(|s| s.1).collect(),
        birth_year: 1985,
        gender: 2,
        last_seen: 1_764_000_000,
        freq: Vec::new(),
    };
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&r).expect("serialise");
    let mut p = ProfileData {
        user_id: id,
        segments: segs,
        ..Default::default()
    };
    let mut packed = Vec::new();
    p.encode_into(0, &mut packed).expect("valid profile");
    println!(
        "packed {} bytes, rkyv {} bytes",
        packed.len(),
        archived.len()
    );
    // Two cache lines (record layout version 2; 168 bytes in version 1).
    assert_eq!(packed.len(), 128);
    assert!(
        archived.len() > packed.len(),
        "rkyv {} vs packed {}",
        archived.len(),
        packed.len()
    );
}

//! Budget leases against the real Redis: atomic grants never exceed the budget across
//! concurrent holders, spend is taken from leases, and a dead holder's lease returns after TTL.

mod common;

use control::RedisBudget;
use shards::pacing::LeaseOp;

fn op(spent: i64, want: i64) -> LeaseOp {
    LeaseOp {
        campaign_id: 7,
        spent,
        want,
    }
}

#[test]
fn grants_never_exceed_the_budget_across_holders() {
    let Some(url) = common::redis(1) else { return };
    let mut b = RedisBudget::new(common::con(&url), 60_000);
    b.try_init(7, 1_000_000).unwrap();
    b.try_init(7, 5).unwrap(); // NX: the first value stays
    assert_eq!(b.remaining(7).unwrap(), 1_000_000);
    // Four holders on four connections race for leases of 7,000 until nothing is left.
    let handles: Vec<_> = (0..4)
        .map(|h| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut b = RedisBudget::new(common::con(&url), 60_000);
                let mut got = 0;
                loop {
                    let g = b.try_exchange(&format!("n:{h}"), &op(0, 7_000)).unwrap();
                    if g.granted == 0 {
                        return got;
                    }
                    got += g.granted;
                }
            })
        })
        .collect();
    let total: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 1_000_000);
    assert_eq!(b.remaining(7).unwrap(), 0);
}

#[test]
fn spend_comes_out_of_the_lease_and_dead_leases_return() {
    let Some(url) = common::redis(2) else { return };
    let mut b = RedisBudget::new(common::con(&url), 300);
    b.try_init(7, 10_000).unwrap();
    let g = b.try_exchange("a:0", &op(0, 4_000)).unwrap();
    assert_eq!((g.granted, g.balance), (4_000, 4_000));
    // Spend 1,500 and ask for 1,000 more.
    let g = b.try_exchange("a:0", &op(1_500, 1_000)).unwrap();
    assert_eq!((g.granted, g.balance), (1_000, 3_500));
    assert_eq!(b.remaining(7).unwrap(), 5_000);
    // Holder b takes the rest; a goes silent and its 3,500 return after the TTL.
    b.ttl_ms = 60_000;
    let g = b.try_exchange("b:0", &op(0, 100_000)).unwrap();
    assert_eq!(g.granted, 5_000);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let g = b.try_exchange("b:0", &op(0, 100_000)).unwrap();
    assert_eq!(g.granted, 3_500, "a's unspent lease came back");
    // a reports a late win of 200 after losing its lease: charged as overdraft.
    let g = b.try_exchange("a:0", &op(200, 0)).unwrap();
    assert_eq!(g.balance, 0);
    assert_eq!(b.overdraft, 200);
    // Money conservation: spent 1,500 + 200, leases 8,500 held by b, remaining −200.
    assert_eq!(b.remaining(7).unwrap(), -200);
}

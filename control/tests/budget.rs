//! Budget leases against the real Redis: atomic grants never exceed the budget across
//! concurrent holders, spend is taken from leases, and a dead holder's lease is forfeited (never
//! granted again) at its TTL or when a new incarnation of the holder takes its name over.

mod common;

use control::RedisBudget;
use shards::pacing::LeaseOp;

fn op(spent: i64, want: i64) -> LeaseOp {
    // One "impression" as large as the budgets here: the quarter-share cap never binds.
    LeaseOp::new(7, spent, want, 1_000_000)
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
fn spend_comes_out_of_the_lease_and_dead_leases_are_forfeited() {
    let Some(url) = common::redis(2) else { return };
    let mut b = RedisBudget::new(common::con(&url), 300);
    b.try_init(7, 10_000).unwrap();
    let g = b.try_exchange("a:0", &op(0, 4_000)).unwrap();
    assert_eq!((g.granted, g.balance), (4_000, 4_000));
    // Spend 1,500 and ask for 1,000 more.
    let g = b.try_exchange("a:0", &op(1_500, 1_000)).unwrap();
    assert_eq!((g.granted, g.balance), (1_000, 3_500));
    assert_eq!(b.remaining(7).unwrap(), 5_000);
    // Holder b takes the rest; a goes silent (it may have spent its 3,500 without reporting
    // it): at the TTL its lease is forfeited, counted as spent, not granted again.
    b.ttl_ms = 60_000;
    let g = b.try_exchange("b:0", &op(0, 100_000)).unwrap();
    assert_eq!(g.granted, 5_000);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let g = b.try_exchange("b:0", &op(0, 100_000)).unwrap();
    assert_eq!(g.granted, 0, "a's lease did not come back");
    assert_eq!(b.forfeit(7, "a:0").unwrap(), 3_500);
    assert_eq!(b.forfeited, 3_500);
    // a reports a late win of 200 after losing its lease: out of its forfeit, no overdraft.
    let g = b.try_exchange("a:0", &op(200, 0)).unwrap();
    assert_eq!(g.balance, 0);
    assert_eq!((b.overdraft, b.forfeit_charged), (0, 200));
    assert_eq!(b.forfeit(7, "a:0").unwrap(), 3_300);
    // Money conservation: spent 1,500 + 200, leases 5,000 held by b, forfeit 3,300.
    assert_eq!(b.remaining(7).unwrap(), 0);
}

#[test]
fn a_restarted_holder_forfeits_its_predecessors_lease_and_its_billing_is_charged_there() {
    let Some(url) = common::redis(7) else { return };
    let mut b = RedisBudget::new(common::con(&url), 60_000);
    b.try_init(7, 20_000).unwrap();
    let inc = |spent, want, inc_ms| {
        let mut o = op(spent, want);
        o.incarnation_ms = inc_ms;
        o
    };
    // Incarnation 1,000 holds 4,000, reports 1,000 of spend, spends 1,500 more unreported and
    // is SIGKILLed. Incarnation 9,000 of the same holder asks for a lease.
    assert_eq!(
        b.try_exchange("n:0", &inc(0, 4_000, 1_000))
            .unwrap()
            .balance,
        4_000
    );
    // Before the new incarnation's first op, a charge for the old one's bid hits its lease.
    b.try_charge("n:0", 7, 500, 1_500).unwrap();
    assert_eq!(
        b.try_exchange("n:0", &inc(1_000, 0, 1_000))
            .unwrap()
            .balance,
        2_500
    );
    let g = b.try_exchange("n:0", &inc(0, 4_000, 9_000)).unwrap();
    assert_eq!((g.granted, g.balance), (4_000, 4_000), "nothing inherited");
    assert_eq!(g.remote_spent, 0);
    assert_eq!(b.forfeit(7, "n:0").unwrap(), 2_500);
    // The old incarnation's billing (bid at 8,000 ms < 9,000) comes out of the forfeit; the new
    // one's out of its lease (and is reported to it as remote spend).
    b.try_charge("n:0", 7, 1_500, 8_000).unwrap();
    b.try_charge("n:0", 7, 700, 9_500).unwrap();
    assert_eq!(b.forfeit(7, "n:0").unwrap(), 1_000);
    let g = b.try_exchange("n:0", &inc(0, 0, 9_000)).unwrap();
    assert_eq!((g.balance, g.remote_spent), (3_300, 700));
    assert_eq!(b.overdraft, 0);
    // Conservation: remaining + lease + forfeit + spend charged or reported = the budget.
    assert_eq!(
        b.remaining(7).unwrap() + 3_300 + 1_000 + (500 + 1_000 + 1_500 + 700),
        20_000
    );
    // A clean shutdown's final settlement keeps only the outstanding reservations (900).
    let mut close = inc(300, 0, 9_000);
    close.keep = Some(900);
    let g = b.try_exchange("n:0", &close).unwrap();
    assert_eq!((g.granted, g.balance), (0, 900));
    assert_eq!(b.remaining(7).unwrap(), 20_000 - 900 - 1_000 - 4_000);
    // The next incarnation forfeits those 900 (bids that may still be billed), no more.
    b.try_exchange("n:0", &inc(0, 0, 20_000)).unwrap();
    assert_eq!(b.forfeit(7, "n:0").unwrap(), 1_900);
}

#[test]
fn a_charge_takes_from_the_holders_lease_and_reaches_its_next_grant() {
    let Some(url) = common::redis(5) else { return };
    let mut b = RedisBudget::new(common::con(&url), 60_000);
    b.try_init(7, 10_000).unwrap();
    let g = b.try_exchange("a:0", &op(0, 4_000)).unwrap();
    assert_eq!((g.granted, g.remote_spent), (4_000, 0));
    // Node b was billed for a bid a:0 made: a's lease pays, without renewing a's expiry.
    let exp_before: f64 = redis::cmd("ZSCORE")
        .arg(control::keys::expiry(7))
        .arg("a:0")
        .query(&mut common::con(&url))
        .unwrap();
    b.try_charge("a:0", 7, 1_200, 0).unwrap();
    let exp_after: f64 = redis::cmd("ZSCORE")
        .arg(control::keys::expiry(7))
        .arg("a:0")
        .query(&mut common::con(&url))
        .unwrap();
    assert_eq!(exp_before, exp_after, "a charge never renews the holder");
    assert_eq!(b.remaining(7).unwrap(), 6_000);
    // a's next exchange sees its balance reduced and learns the remote spend once.
    let g = b.try_exchange("a:0", &op(0, 0)).unwrap();
    assert_eq!((g.balance, g.remote_spent), (2_800, 1_200));
    let g = b.try_exchange("a:0", &op(0, 0)).unwrap();
    assert_eq!(g.remote_spent, 0);
    // Beyond the lease, the remaining budget pays (overdraft), and with no lease at all too.
    b.try_charge("a:0", 7, 3_000, 0).unwrap();
    assert_eq!(b.overdraft, 200);
    b.try_charge("gone:1", 7, 500, 0).unwrap();
    assert_eq!(b.overdraft, 700);
    // Conservation: 10,000 = remaining + leases + spend (1,200 + 3,000 + 500).
    let held: i64 = redis::cmd("HGET")
        .arg(control::keys::leases(7))
        .arg("a:0")
        .query(&mut common::con(&url))
        .unwrap();
    assert_eq!(b.remaining(7).unwrap() + held, 10_000 - 4_700);
}

#[test]
fn one_exchange_takes_at_most_a_quarter_of_what_remains() {
    let Some(url) = common::redis(6) else { return };
    let mut b = RedisBudget::new(common::con(&url), 60_000);
    b.try_init(7, 1_000_000).unwrap();
    let big = |unit| LeaseOp::new(7, 0, 10_000_000, unit);
    // The first holder to ask cannot take everything: the second still gets its share.
    assert_eq!(b.try_exchange("a:0", &big(2_500)).unwrap().granted, 250_000);
    assert_eq!(b.try_exchange("b:0", &big(2_500)).unwrap().granted, 187_500);
    // Near the end: at least one impression's cost while there is that much.
    redis::cmd("SET")
        .arg(control::keys::remaining(7))
        .arg(6_000)
        .exec(&mut common::con(&url))
        .unwrap();
    assert_eq!(b.try_exchange("a:0", &big(2_500)).unwrap().granted, 2_500);
    assert_eq!(b.try_exchange("b:0", &big(2_500)).unwrap().granted, 2_500);
    assert_eq!(b.try_exchange("a:0", &big(2_500)).unwrap().granted, 1_000);
    assert_eq!(b.remaining(7).unwrap(), 0);
    // The same rule as the in-process store.
    assert_eq!(
        shards::pacing::grant_for(10_000_000, 1_000_000, 2_500),
        250_000
    );
}

#[test]
fn releases_queue_for_the_bidding_node_and_are_taken_once() {
    let Some(url) = common::redis(7) else { return };
    let mut b = RedisBudget::new(common::con(&url), 60_000);
    b.try_release("node-b", 1, 7, 123_456_789, 2_500).unwrap();
    b.try_release("node-b", 0, 8, 5, 1_000).unwrap();
    b.try_release("node-c", 0, 7, 6, 3_000).unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(control::keys::releases("node-b"))
        .query(&mut common::con(&url))
        .unwrap();
    assert!(ttl > 0, "a dead node's list expires");
    assert_eq!(
        b.try_take_releases("node-b", 1024).unwrap(),
        vec![(1, 7, 123_456_789, 2_500), (0, 8, 5, 1_000)]
    );
    assert!(b.try_take_releases("node-b", 1024).unwrap().is_empty());
    assert_eq!(b.try_take_releases("node-c", 1024).unwrap().len(), 1);
}

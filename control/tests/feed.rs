//! Live campaign sets from Redis reach every core in under a second; a bad set is rejected whole
//! and the old one stays; leases flow to the shard through its feed.

mod common;

use std::time::{Duration, Instant};

use control::{Control, ControlConfig, keys};
use redis::Commands;
use shards::{CompiledSet, Shard, ShardConfig};

fn set_json(version: u64, budget: i64) -> String {
    format!(
        r#"{{"version":{version},"campaigns":[{{"id":1,"advertiser_id":1,"status":"active","pacing":"asap","bid_cpm_micros":1000000,"total_budget_micros":{budget},
          "creatives":[{{"id":1,"format":{{"type":"native"}},"adm":"x"}}]}}]}}"#
    )
}

fn publish(con: &mut redis::Connection, json: &str, version: u64) {
    let _: () = con.set(keys::CAMPAIGNS, json).expect("SET campaigns");
    let _: String = con
        .xadd(keys::CAMPAIGN_CHANGES, "*", &[("version", version)])
        .expect("XADD change");
}

/// Polls both shards until `pred` holds for both, or `limit` passes; returns the time taken.
fn until(
    feeds: &mut [control::ShardFeed],
    shards: &mut [Shard],
    limit: Duration,
    pred: impl Fn(&Shard) -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        for (f, s) in feeds.iter_mut().zip(shards.iter_mut()) {
            f.poll(s);
        }
        if shards.iter().all(&pred) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn changes_reach_every_core_within_a_second_and_bad_sets_are_refused() {
    let Some(url) = common::redis(3) else { return };
    let mut con = common::con(&url);
    publish(&mut con, &set_json(1, 1_000_000), 1);
    let (control, mut feeds) = Control::spawn(ControlConfig::new(&url, "node-t", 2)).unwrap();
    let mut shards: Vec<Shard> = (0..2)
        .map(|c| Shard::new(c, CompiledSet::empty()))
        .collect();
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.set().version == 1
    })
    .expect("initial set loaded");

    publish(&mut con, &set_json(2, 1_000_000), 2);
    let took = until(&mut feeds, &mut shards, Duration::from_secs(3), |s| {
        s.set().version == 2
    })
    .expect("version 2 arrives");
    println!("change reached both cores in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A bad set (duplicate ids) is refused whole: version 2 stays.
    let bad = set_json(3, 1).replace(r#""campaigns":[{"#, r#""campaigns":[{"id":1,"advertiser_id":1,"status":"active","bid_cpm_micros":1,"total_budget_micros":1,"creatives":[{"id":1,"format":{"type":"video"},"adm":"v"}]},{"#);
    publish(&mut con, &bad, 3);
    publish(&mut con, "{not json", 4);
    let t0 = Instant::now();
    while control
        .stats
        .sets_rejected
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(t0.elapsed() < Duration::from_secs(3), "rejections counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        until(&mut feeds, &mut shards, Duration::from_millis(300), |s| s
            .set()
            .version
            != 2)
        .is_none()
    );
    publish(&mut con, &set_json(5, 1_000_000), 5);
    until(&mut feeds, &mut shards, Duration::from_secs(1), |s| {
        s.set().version == 5
    })
    .expect("a good set after bad ones installs");
    drop(control);
}

#[test]
fn leases_flow_from_redis_to_the_shard_and_spend_back() {
    let Some(url) = common::redis(4) else { return };
    let mut con = common::con(&url);
    publish(&mut con, &set_json(1, 50_000), 1);
    let mut cfg = ControlConfig::new(&url, "node-l", 1);
    cfg.tick_ms = 20;
    let (_control, mut feeds) = Control::spawn(cfg).unwrap();
    let scfg = ShardConfig {
        enforce_budget: true,
        ..ShardConfig::default()
    };
    let mut shards = vec![Shard::with_config(0, CompiledSet::empty(), scfg)];
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.set().version == 1 && s.runtime(0).lease > 0
    })
    .expect("a lease is granted");
    let lease = shards[0].runtime(0).lease;
    assert!(lease <= 50_000);
    let remaining: i64 = con.get(keys::remaining(1)).unwrap();
    let held: i64 = con.hget(keys::leases(1), "node-l:0").unwrap();
    assert_eq!(remaining + held, 50_000, "money is conserved");
    assert_eq!(held, lease);
    // Spend 700 of it: reported at the next tick.
    shards[0].settle(1, 0, codec::Micros(0), codec::Micros(700));
    until(&mut feeds, &mut shards, Duration::from_secs(3), |_| {
        let mut c = common::con(&url);
        let r: i64 = c.get(keys::remaining(1)).unwrap();
        let h: i64 = c.hget(keys::leases(1), "node-l:0").unwrap();
        r + h == 50_000 - 700
    })
    .expect("spend reported");
}

/// Without any Redis (a campaigns file): budgets come from the set, held in the control
/// thread's own store, and charges of other cores' bids reach their lease.
#[test]
fn a_fixed_set_gets_leases_from_the_in_process_store() {
    let set = CompiledSet::parse(set_json(1, 30_000).as_bytes()).unwrap();
    let mut cfg = ControlConfig::new("", "node-m", 2);
    cfg.budget_redis_url = String::new();
    cfg.fixed_set = Some(set.clone());
    cfg.tick_ms = 10;
    cfg.lease_ttl_ms = 400;
    let (control, mut feeds) = Control::spawn(cfg).unwrap();
    let mut scfg = ShardConfig {
        enforce_budget: true,
        ..ShardConfig::default()
    };
    // Renewals every 100 ms carry the remote spend back quickly.
    scfg.pacing.lease_ttl_ms = 400;
    let mut shards: Vec<Shard> = (0..2)
        .map(|c| Shard::with_config(c, set.clone(), scfg.clone()))
        .collect();
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.runtime(0).lease > 0 && !s.leases_pending()
    })
    .expect("both cores get a lease");
    let total: i64 = shards.iter().map(|s| s.runtime(0).lease).sum();
    assert!(total <= 30_000, "never more than the budget: {total}");
    // Core 1 settles a bid core 0 made (billed on core 1): charged to core 0's lease.
    let before = shards[0].runtime(0).lease;
    assert!(
        feeds[1].charger().charge(control::Charge {
            node: codec::event::InlineStr::new("node-m"),
            core: 0,
            campaign_id: 1,
            spent: 900,
            // A bid of this process (made after its start): bids of earlier incarnations are
            // charged to their forfeit instead.
            bid_ts_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
            reserved: 1_000,
        })
    );
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.core() != 0 || s.runtime(0).total_spent == 900
    })
    .expect("core 0 learns the remote spend");
    // Money is conserved: what both cores hold plus the spend stays within the budget.
    let held: i64 = shards.iter().map(|s| s.runtime(0).lease).sum();
    assert!(held + 900 <= 30_000, "held {held} + spent 900");
    assert!(before > 0);
    assert_eq!(
        control
            .stats
            .charges
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A process that dies without settling (SIGKILL: its control thread never sends what the
/// core spent since its last report) and is restarted under the same node name: the new
/// incarnation starts from a fresh lease and the dead one's balance is forfeited (counted as
/// spent), so the unreported spend can never be spent twice. A clean shutdown instead reports
/// its spend and gives its lease back before the control thread stops.
#[test]
fn a_restart_forfeits_an_unsettled_lease_and_a_clean_shutdown_gives_it_back() {
    let Some(url) = common::redis(8) else { return };
    let mut con = common::con(&url);
    publish(&mut con, &set_json(1, 100_000), 1);
    let scfg = ShardConfig {
        enforce_budget: true,
        ..ShardConfig::default()
    };
    let incarnation = |inc_ms: u64| {
        let mut cfg = ControlConfig::new(&url, "node-k", 1);
        cfg.tick_ms = 20;
        cfg.incarnation_ms = inc_ms;
        let (control, feeds) = Control::spawn(cfg).unwrap();
        let shards = vec![Shard::with_config(0, CompiledSet::empty(), scfg.clone())];
        (control, feeds, shards)
    };
    let held = |con: &mut redis::Connection| -> i64 {
        con.hget::<_, _, Option<i64>>(keys::leases(1), "node-k:0")
            .unwrap()
            .unwrap_or(0)
    };
    let remaining = |con: &mut redis::Connection| -> i64 { con.get(keys::remaining(1)).unwrap() };
    let forfeit = |con: &mut redis::Connection| -> i64 {
        con.hget::<_, _, Option<i64>>(keys::forfeit(1), "node-k:0")
            .unwrap()
            .unwrap_or(0)
    };

    // Incarnation 1 gets a lease, spends 700 and "dies" before reporting it.
    let (control, mut feeds, mut shards) = incarnation(1_000);
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.set().version == 1 && s.runtime(0).lease > 0 && !s.leases_pending()
    })
    .expect("a lease is granted");
    let lease1 = held(&mut con);
    assert!(lease1 > 700);
    shards[0].settle(1, 0, codec::Micros(0), codec::Micros(700));
    drop(feeds); // never polled again: the 700 is not reported
    drop(control);
    assert_eq!(held(&mut con), lease1, "the store never heard of the 700");

    // Incarnation 2 of the same holder: a fresh lease; the old one is forfeited whole.
    let (control, mut feeds, mut shards) = incarnation(2_000);
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.set().version == 1 && s.runtime(0).lease > 0 && !s.leases_pending()
    })
    .expect("a lease for the new incarnation");
    let lease2 = held(&mut con);
    assert_eq!(
        forfeit(&mut con),
        lease1,
        "the dead incarnation's lease is forfeited"
    );
    assert_eq!(
        remaining(&mut con) + lease2 + lease1,
        100_000,
        "nothing of the old lease went back to the budget"
    );
    let forfeited = control
        .stats
        .forfeited_micros
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(forfeited, lease1 as u64);

    // It spends 1,000 of its own and shuts down cleanly (no bid outstanding): the spend is
    // reported and the whole rest of its lease goes back. (`pacing` tests that outstanding
    // reservations are kept.)
    shards[0].settle(1, 0, codec::Micros(0), codec::Micros(1_000));
    assert_eq!(
        feeds[0].close(&mut shards[0]),
        0,
        "the final settlement is queued"
    );
    drop(control); // one last round, then the thread stops
    assert_eq!(held(&mut con), 0, "nothing is kept");
    assert_eq!(
        remaining(&mut con),
        100_000 - lease1 - 1_000,
        "the rest of the lease went back"
    );
    // The next incarnation has nothing more to forfeit.
    let (control, mut feeds, mut shards) = incarnation(3_000);
    until(&mut feeds, &mut shards, Duration::from_secs(5), |s| {
        s.set().version == 1 && s.runtime(0).lease > 0 && !s.leases_pending()
    })
    .expect("a lease for the third incarnation");
    assert_eq!(forfeit(&mut con), lease1);
    drop(control);
}

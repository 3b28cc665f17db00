//! Budgets enforced end to end: real `helios` processes, real Redis (`HELIOS_REDIS_URL`), and a
//! test exchange that sends bid requests, runs the auction (a share of the bids win at a fixed
//! clearing price) and calls the signed win/billing/loss URLs of each bid — on another
//! connection (so another core) and, with two nodes, often on the other node.
//!
//! Checked: a campaign with a small budget stops bidding (`budget_exhausted`) with the billed
//! spend ≤ budget + 1%, and Redis accounts for every billed micro (remaining + leases = budget −
//! spend); two nodes sharing one budget both bid and together stay within it; a node SIGKILLed
//! while holding a lease loses it for good (forfeited: it may have spent it without reporting),
//! the other node never spends it, and the node restarted under the same name starts from a
//! fresh lease while the billing of its dead incarnation's bids is charged to the forfeit.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const CAMPAIGN: u32 = 501;
/// 1 USD: 400 impressions at the 2.5 USD bid, 500 at the 2.0 USD clearing price.
const BUDGET: i64 = 1_000_000;
const CLEARING: &str = "2.0";
/// Spend of one billed impression at the clearing price (what the reporter sums).
const SPEND: i64 = 2_000;
const KEY: &str = "budget-test-notice-key";

fn campaigns_json(version: u64) -> String {
    format!(
        r#"{{"version":{version},"campaigns":[
  {{"id":{CAMPAIGN},"advertiser_id":50,"status":"active","pacing":"asap","bid_cpm_micros":2500000,"total_budget_micros":{BUDGET},
   "creatives":[{{"id":5011,"format":{{"type":"banner","w":300,"h":250}},"adomain":["budget.example"],"adm":"<a>ad</a>"}}]}}]}}"#
    )
}

/// `HELIOS_REDIS_URL` with database `db` selected and flushed, or `None` (skipped) unless
/// `HELIOS_REQUIRE_SERVICES=1`.
fn redis(db: u8) -> Option<String> {
    let Ok(base) = std::env::var("HELIOS_REDIS_URL") else {
        if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("HELIOS_REDIS_URL is not set but HELIOS_REQUIRE_SERVICES=1");
        }
        println!("skipped: HELIOS_REDIS_URL not set (start redis with scripts/services.sh)");
        return None;
    };
    let url = format!("{}/{db}", base.trim_end_matches('/'));
    redis::cmd("FLUSHDB").exec(&mut con(&url)).unwrap();
    Some(url)
}

fn con(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Publishes the campaign set the way the reporter's campaign management does.
fn publish(url: &str, version: u64) {
    let mut c = con(url);
    redis::cmd("SET")
        .arg("helios:campaigns")
        .arg(campaigns_json(version))
        .exec(&mut c)
        .unwrap();
    redis::cmd("XADD")
        .arg("helios:campaigns:changes")
        .arg("*")
        .arg("version")
        .arg(version)
        .exec(&mut c)
        .unwrap();
}

/// What the campaign's forfeits hold (leases of dead incarnations not charged since).
fn redis_forfeit(url: &str) -> i64 {
    let f: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(format!("helios:budget:{{{CAMPAIGN}}}:forfeit"))
        .query(&mut con(url))
        .unwrap();
    f.iter().map(|h| h.1).sum()
}

/// What Redis holds for the campaign: remaining budget and the leases by holder.
fn redis_money(url: &str) -> (i64, Vec<(String, i64)>) {
    let mut c = con(url);
    let remaining: Option<i64> = redis::cmd("GET")
        .arg(format!("helios:budget:{{{CAMPAIGN}}}:remaining"))
        .query(&mut c)
        .unwrap();
    let leases: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(format!("helios:budget:{{{CAMPAIGN}}}:leases"))
        .query(&mut c)
        .unwrap();
    (remaining.unwrap_or(0), leases)
}

/// A node: `helios` on 2 cores with budgets in Redis (`url`); campaigns from Redis when
/// `live`, else from the file (budgets seeded from it).
fn node(name: &str, url: &str, live: bool, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("HELIOS_NOTICES_KEY", KEY),
        ("HELIOS_SERVER_NODE", name),
        ("HELIOS_BUDGET_REDIS_URL", url),
        // A core without traffic gives its lease back soon (the connections may all land on
        // one core).
        ("HELIOS_BUDGET_IDLE_RETURN_MS", "500"),
    ];
    if live {
        env.push(("HELIOS_BIDDING_CAMPAIGNS_REDIS_URL", url));
    }
    env.extend_from_slice(extra);
    Server::start_with_campaigns("uring", &campaigns_json(1), &["--cores", "all"], &env)
}

struct Bid {
    nurl: String,
    burl: String,
    lurl: String,
}

/// The path and query of a notice URL with the exchange's macros filled in.
fn fill(url: &str) -> String {
    let at = url.find("/notice/").unwrap();
    url[at..]
        .replace("${AUCTION_PRICE}", CLEARING)
        .replace("${AUCTION_CURRENCY}", "USD")
        .replace("${AUCTION_ID}", "auc")
        .replace("${AUCTION_IMP_ID}", "i1")
        .replace("${AUCTION_LOSS}", "102")
        .replace("${AUCTION_MIN_TO_WIN}", "2.6")
}

fn get(c: &mut Client, path: &str) -> u16 {
    c.roundtrip(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .status
}

/// The test exchange: several connections to each node, auctions, notices.
struct Exchange {
    /// Per node: connections (bids go on one, notices on another: often another core).
    conns: Vec<Vec<Client>>,
    n: u64,
    /// Per node: bids, billed impressions, billed spend (micros).
    pub bids: Vec<u64>,
    pub billed: Vec<u64>,
    pub spend: Vec<i64>,
}

impl Exchange {
    fn new(nodes: &[&Server]) -> Exchange {
        Exchange {
            conns: nodes
                .iter()
                .map(|s| (0..4).map(|_| s.client()).collect())
                .collect(),
            n: 0,
            bids: vec![0; nodes.len()],
            billed: vec![0; nodes.len()],
            spend: vec![0; nodes.len()],
        }
    }

    /// One auction on node `k`; notices go to node `notice_to`. 60% of bids win and are
    /// billed, the rest lose. Returns whether the node bid.
    fn auction(&mut self, k: usize, notice_to: usize) -> bool {
        match self.bid(k) {
            Some((bid, win)) => {
                self.notify(k, notice_to, &bid, win);
                true
            }
            None => false,
        }
    }

    /// One bid request to node `k`: the bid and whether it will win (60%), no notice yet.
    fn bid(&mut self, k: usize) -> Option<(Bid, bool)> {
        self.n += 1;
        let n = self.n;
        let body = format!(
            r#"{{"id":"b-{n}","imp":[{{"id":"i1","banner":{{"w":300,"h":250}}}}],"tmax":500}}"#
        );
        let c = (n % 4) as usize;
        let r = self.conns[k][c].roundtrip(&post("/openrtb2/bid/adx", body.as_bytes(), ""));
        if r.status == 204 {
            return None;
        }
        assert_eq!(r.status, 200, "{r:?}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let b = &v["seatbid"][0]["bid"][0];
        let bid = Bid {
            nurl: b["nurl"].as_str().unwrap().to_owned(),
            burl: b["burl"].as_str().unwrap().to_owned(),
            lurl: b["lurl"].as_str().unwrap().to_owned(),
        };
        self.bids[k] += 1;
        Some((bid, n % 5 < 3))
    }

    /// The notices of node `k`'s bid, sent to node `notice_to`: win + billing, or loss.
    fn notify(&mut self, k: usize, notice_to: usize, bid: &Bid, win: bool) {
        let c = (self.n % 4) as usize;
        let nc = &mut self.conns[notice_to][(c + 1) % 4];
        if win {
            assert_eq!(get(nc, &fill(&bid.nurl)), 204);
            assert_eq!(get(nc, &fill(&bid.burl)), 204);
            self.billed[k] += 1;
            self.spend[k] += SPEND;
        } else {
            assert_eq!(get(nc, &fill(&bid.lurl)), 204);
        }
    }

    fn total_spend(&self) -> i64 {
        self.spend.iter().sum()
    }
}

/// Runs auctions (round-robin over `nodes`, notices to `notice_to(i)`) until no node has bid
/// for `quiet` auctions in a row, at most `max` auctions.
fn until_exhausted(
    x: &mut Exchange,
    nodes: &[usize],
    notice_to: impl Fn(usize, u64) -> usize,
    quiet: u64,
    max: u64,
) {
    let mut since_bid = 0;
    for i in 0..max {
        let k = nodes[(i as usize) % nodes.len()];
        if x.auction(k, notice_to(k, i)) {
            since_bid = 0;
        } else {
            since_bid += 1;
            if since_bid >= quiet {
                return;
            }
            // Exhausted for now: leases are exchanged every 20 ms.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits until Redis accounts for `spend` exactly: remaining + leases = budget − spend (every
/// billed micro reported), at most 5 s; returns (remaining, leases) as last read.
fn conserved(url: &str, spend: i64) -> (i64, i64) {
    let t0 = Instant::now();
    loop {
        let (rem, leases) = redis_money(url);
        let held: i64 = leases.iter().map(|l| l.1).sum();
        if rem + held == BUDGET - spend || t0.elapsed() > Duration::from_secs(5) {
            return (rem, held);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_small_budget_stops_bidding_within_one_percent() {
    let Some(url) = redis(10) else { return };
    publish(&url, 1);
    let s = node("bt-a", &url, true, &[]);
    let mut x = Exchange::new(&[&s]);
    until_exhausted(&mut x, &[0], |_, _| 0, 300, 20_000);
    // What an idle core still held (given back after 500 ms) is spent by a second round.
    std::thread::sleep(Duration::from_millis(1_000));
    until_exhausted(&mut x, &[0], |_, _| 0, 300, 20_000);
    let spend = x.total_spend();
    println!(
        "bids {} billed {} spend {spend} of {BUDGET}",
        x.bids[0], x.billed[0]
    );
    assert!(spend <= BUDGET + BUDGET / 100, "overspent: {spend}");
    assert!(spend >= BUDGET * 9 / 10, "the budget was not used: {spend}");
    assert!(s.metric_with("helios_no_bids_total", "reason=\"budget_exhausted\"") > 0);
    // Redis accounts for every billed micro, and nothing is left to bid with.
    let (rem, held) = conserved(&url, spend);
    assert_eq!(
        rem + held,
        BUDGET - spend,
        "remaining {rem} + leases {held}"
    );
    let (_, m) = s.admin_get("/metrics");
    let budget_lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("helios_budget_"))
        .collect();
    assert!(
        rem + held < 2_500,
        "less than one bid left: {} ({budget_lines:#?})",
        rem + held
    );
    // Notices were settled on the bidding core, some forwarded from the other core.
    let local = s.metric_sum("helios_budget_settled_local_total");
    let received = s.metric_sum("helios_budget_received_total");
    assert_eq!(local + received, x.bids[0], "every win/loss settled once");
    // The appliance's own tally of billed spend matches the billing notices.
    assert_eq!(
        s.metric_when("helios_budget_spent_micros_total", |v| v == spend as u64),
        spend as u64
    );
}

#[test]
fn without_redis_the_file_budget_is_enforced_in_process() {
    let s = Server::start_with_campaigns(
        "uring",
        &campaigns_json(1),
        &[],
        &[
            ("HELIOS_NOTICES_KEY", KEY),
            ("HELIOS_BUDGET_IDLE_RETURN_MS", "500"),
        ],
    );
    assert!(s.admin_get("/debug/config").1.contains("enforce = true"));
    let mut x = Exchange::new(&[&s]);
    until_exhausted(&mut x, &[0], |_, _| 0, 300, 20_000);
    let spend = x.total_spend();
    assert!(spend <= BUDGET + BUDGET / 100, "overspent: {spend}");
    assert!(spend >= BUDGET * 9 / 10, "the budget was not used: {spend}");
    let (_, m) = s.admin_get("/metrics");
    assert!(m.contains("store=\"memory\""), "{m}");
}

#[test]
fn two_nodes_share_one_budget() {
    let Some(url) = redis(11) else { return };
    publish(&url, 1);
    let a = node("bt-b1", &url, true, &[]);
    let b = node("bt-b2", &url, true, &[]);
    let mut x = Exchange::new(&[&a, &b]);
    // Auctions alternate between the nodes; every other auction's notices go to the other
    // node (charged and released through Redis).
    until_exhausted(
        &mut x,
        &[0, 1],
        |k, i| if i % 4 < 2 { 1 - k } else { k },
        400,
        40_000,
    );
    let spend = x.total_spend();
    println!(
        "node 1: bids {} spend {}; node 2: bids {} spend {}; total {spend} of {BUDGET}",
        x.bids[0], x.spend[0], x.bids[1], x.spend[1]
    );
    assert!(spend <= BUDGET + BUDGET / 100, "overspent: {spend}");
    assert!(spend >= BUDGET * 9 / 10, "the budget was not used: {spend}");
    for k in 0..2 {
        assert!(
            x.spend[k] >= BUDGET / 5,
            "node {k} bid too little while budget remained: {:?}",
            x.spend
        );
    }
    let (rem, held) = conserved(&url, spend);
    assert_eq!(rem + held, BUDGET - spend);
    assert!(a.metric_sum("helios_budget_charged_remote_total") > 0);
    assert!(b.metric_sum("helios_budget_charged_remote_total") > 0);
}

#[test]
fn a_killed_nodes_lease_is_forfeited_and_its_restart_neither_inherits_nor_double_charges() {
    let Some(url) = redis(12) else { return };
    publish(&url, 1);
    let mut a = node("bt-c1", &url, true, &[]);
    let b = node("bt-c2", &url, true, &[]);
    let mut x = Exchange::new(&[&a, &b]);
    // Node 1 bids alone for a while and builds up leases; the notices of its last ten bids
    // have not come yet when it is SIGKILLed (they arrive after its restart).
    for _ in 0..120 {
        x.auction(0, 0);
    }
    let mut late = Vec::new();
    while late.len() < 10 {
        if let Some(b) = x.bid(0) {
            late.push(b);
        }
    }
    // Node 1 reports its spend within a poll (20 ms here); then kill it (before its idle
    // give-back at 500 ms).
    let (rem, held) = conserved(&url, x.total_spend());
    assert_eq!(
        rem + held,
        BUDGET - x.total_spend(),
        "node 1's spend is in Redis"
    );
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5));
    let (_, leases) = redis_money(&url);
    let held_by_1: i64 = leases
        .iter()
        .filter(|l| l.0.starts_with("bt-c1:"))
        .map(|l| l.1)
        .sum();
    println!("node 1 spent {} and holds {held_by_1}", x.spend[0]);
    assert!(held_by_1 >= 20_000, "node 1 holds a lease: {leases:?}");
    // Node 2 spends what is not leased to node 1, then stops.
    until_exhausted(&mut x, &[1], |_, _| 1, 200, 20_000);
    // Node 1 comes back under the same name: its first lease ops forfeit what its dead
    // incarnation held (it may have spent all of it without reporting), instead of taking
    // it over; the dead incarnation's billing, arriving now, is charged to that forfeit.
    let a2 = node("bt-c1", &url, true, &[]);
    x.conns[0] = (0..4).map(|_| a2.client()).collect();
    for (bid, win) in &late {
        x.notify(0, 0, bid, *win);
    }
    until_exhausted(&mut x, &[0, 1], |k, _| k, 300, 20_000);
    let spend = x.total_spend();
    let forfeit = redis_forfeit(&url);
    println!(
        "node 1 spent {} (10 late notices), node 2 {}; total {spend} of {BUDGET}; forfeit left {forfeit}",
        x.spend[0], x.spend[1]
    );
    assert!(spend <= BUDGET, "overspent: {spend}");
    assert!(
        a2.metric_when("helios_budget_predecessor_notices_total", |v| v == 10) == 10,
        "the late notices were recognised as the dead incarnation's"
    );
    assert!(
        a2.metric_when("helios_budget_forfeited_micros_total", |v| v > 0) > 0,
        "the restarted node forfeited its old leases"
    );
    // Every micro is accounted for: remaining + leases + forfeit = budget − billed spend, and
    // what is left in the forfeit is at most what node 1 held (the underspend).
    let t0 = Instant::now();
    loop {
        let (rem, leases) = redis_money(&url);
        let held: i64 = leases.iter().map(|l| l.1).sum();
        let f = redis_forfeit(&url);
        if rem + held + f == BUDGET - spend {
            assert!(f <= held_by_1, "forfeit {f} > what node 1 held {held_by_1}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "remaining {rem} + leases {held} + forfeit {f} != {BUDGET} - {spend}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_clean_shutdown_settles_its_leases_and_its_restart_forfeits_nothing() {
    let Some(url) = redis(13) else { return };
    publish(&url, 1);
    let mut a = node("bt-d1", &url, true, &[]);
    let mut x = Exchange::new(&[&a]);
    for _ in 0..120 {
        x.auction(0, 0);
    }
    let spend = x.total_spend();
    assert!(spend > 0);
    // SIGTERM: every notice was answered, so no bid is outstanding; the final settlement
    // reports the spend and gives every lease back.
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(30)).success());
    let (rem, leases) = redis_money(&url);
    let held: i64 = leases.iter().map(|l| l.1).sum();
    println!("spent {spend}; after SIGTERM: remaining {rem}, leases {leases:?}");
    assert_eq!(held, 0, "no lease kept: {leases:?}");
    assert_eq!(rem, BUDGET - spend, "everything unspent went back");
    // The restarted node has nothing to forfeit, and bids on.
    let a2 = node("bt-d1", &url, true, &[]);
    x.conns[0] = (0..4).map(|_| a2.client()).collect();
    assert!((0..50).any(|_| x.auction(0, 0)), "the restarted node bids");
    assert_eq!(redis_forfeit(&url), 0);
}

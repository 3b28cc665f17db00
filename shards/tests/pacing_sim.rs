//! Pacing simulation: 10,000 campaigns, one day of synthetic traffic in accelerated time.
//!
//! Event-count simulation in 60-second steps. Per step and campaign: opportunities are drawn
//! from a diurnal rate (peak twice the trough); the campaign's [`Runtime`] (the same state the
//! shard's hot path uses) admits bids through its throttle and only as far as its lease covers
//! one impression's cost per bid (reserving it); wins are drawn at a 20% rate and clear at 70–100%
//! of the bid; outcomes are settled through `Runtime::settle`; spend is reported and leases
//! exchanged with [`MemoryBudget`] (the in-process twin of the Redis store). Checks: every
//! campaign spends at most its budget + 1%, and every even-paced campaign spends within ±10% of
//! its target (daily budget / 24) in every hour.

#![allow(clippy::unwrap_used)] // fixed test data

use shards::pacing::{BudgetStore, MemoryBudget, PacingConfig, Runtime, impression_cost};
use shards::{CompiledSet, ShardConfig};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Binomial(n, p) by its normal approximation (n is large here), clamped to 0..=n.
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        let m = n as f64 * p;
        let sd = (m * (1.0 - p)).sqrt();
        ((m + sd * self.normal()).round().max(0.0) as u64).min(n)
    }
    fn poisson(&mut self, lambda: f64) -> u64 {
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }
}

/// Campaigns (`SIM_CAMPAIGNS` overrides it for quick local runs).
fn n() -> usize {
    std::env::var("SIM_CAMPAIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
const STEP_S: u64 = 60;
const DAY_S: u64 = 86_400;
/// 2026-11-23 00:00 UTC.
const START_S: u64 = 1_795_392_000;
const WIN_RATE: f64 = 0.2;
const CHUNKS: u64 = 10;

/// How many of `k` bids the runtime admits: each must be covered by the lease and the daily
/// limit, with the earlier ones reserved (binary search over `covers` for the batch).
fn admit(rt: &Runtime, c: &shards::index::CCampaign, pc: &PacingConfig, cost: i64, k: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, k);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if rt.covers(c, pc, cost * mid as i64) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[test]
fn ten_thousand_campaigns_spend_within_budget_and_pace_evenly() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let n = n();
    // Campaign i: CPM 1–5 USD; even-paced (4 in 5) with a daily budget sized for ~2,500 wins an
    // hour; asap (1 in 5) with a total budget the traffic exhausts before the day ends.
    let mut json = String::from(r#"{"version":1,"campaigns":["#);
    let mut daily = Vec::with_capacity(n);
    for i in 0..n {
        let cpm = 1_000_000 + (rng.next() % 4_000_000) as i64;
        let even = i % 5 != 0;
        let clear = impression_cost(codec::Micros(cpm)) as f64 * 0.85;
        let d = (24.0 * 2_500.0 * clear) as i64;
        let (pacing, total, dly) = if even {
            ("even", d, format!(r#","daily_budget_micros":{d}"#))
        } else {
            ("asap", d / 3, String::new())
        };
        daily.push(if even { Some(d) } else { None });
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"id":{id},"advertiser_id":1,"status":"active","bid_cpm_micros":{cpm},"total_budget_micros":{total},"pacing":"{pacing}"{dly},"creatives":[{{"id":1,"format":{{"type":"native"}},"adm":"x"}}]}}"#,
            id = i + 1
        ));
    }
    json.push_str("]}");
    let set = CompiledSet::parse(json.as_bytes()).unwrap();
    let cfg = ShardConfig::default().pacing;
    // Leases are exchanged once per step here (every ~1 s in the appliance): look two steps ahead.
    let pc = PacingConfig {
        lease_ahead_s: 2 * STEP_S,
        lease_ttl_ms: 300_000,
        ..cfg
    };
    let mut store = MemoryBudget::new(300_000);
    let mut rts: Vec<Runtime> = set.compiled.iter().map(|c| Runtime::new(c, &pc)).collect();
    for c in &set.compiled {
        store.init(c.id, c.total_budget.0);
    }
    let mut hourly = vec![[0i64; 24]; n];
    let holder = "node-a:0";
    let steps = DAY_S / STEP_S;
    for step in 0..steps {
        let t_s = START_S + step * STEP_S;
        let now_ns = t_s * 1_000_000_000;
        let hour = ((t_s - START_S) / 3600) as usize;
        // Diurnal traffic: trough (2/3) at 06:00, peak (4/3) at 18:00.
        let day_frac = (t_s - START_S) as f64 / DAY_S as f64;
        let shape = 1.0 - (1.0 / 3.0) * (2.0 * std::f64::consts::PI * (day_frac - 0.25)).cos();
        for (i, c) in set.compiled.iter().enumerate() {
            let rt = &mut rts[i];
            rt.tick(c, &pc, now_ns);
            if let Some(op) = rt.take_op() {
                let g = store.exchange(holder, &op, now_ns / 1_000_000);
                rt.grant(&g);
            }
            // Opportunities: 3× what the target needs at the trough, 6× at the peak.
            let need_per_step = 2_500.0 / WIN_RATE / (3600 / STEP_S) as f64;
            let opps = rng.poisson(need_per_step * 4.5 * shape);
            let cost = impression_cost(c.base_cpm);
            let throttled = rng.binomial(opps, f64::from(rt.throttle_ppm) / 1e6);
            rt.opps += opps;
            // The step's bids arrive in CHUNKS batches; each batch reserves (as `covers` and
            // `reserve` do per bid), then its outcomes settle before the next batch.
            let mut spent = 0i64;
            for chunk in 0..CHUNKS {
                let k = throttled / CHUNKS + u64::from(chunk < throttled % CHUNKS);
                let admitted = admit(rt, c, &pc, cost, k);
                rt.admitted += admitted;
                if admitted == 0 {
                    continue;
                }
                rt.reserve(cost * admitted as i64);
                let wins = rng.binomial(admitted, WIN_RATE);
                let clear = 0.7 + 0.3 * rng.unit();
                let s = (wins as f64 * cost as f64 * clear) as i64;
                rt.settle(now_ns, cost * admitted as i64, s);
                spent += s;
            }
            hourly[i][hour] += spent;
        }
    }
    // Final report of what is unreported.
    for (i, c) in set.compiled.iter().enumerate() {
        let rt = &mut rts[i];
        rt.in_flight = false;
        rt.want = 0;
        if let Some(op) = rt.take_op() {
            store.exchange(holder, &op, (START_S + DAY_S) * 1000);
        }
        let _ = c;
    }

    let mut worst_over = 0.0f64;
    let mut worst_hour = 0.0f64;
    for (i, c) in set.compiled.iter().enumerate() {
        let spent: i64 = hourly[i].iter().sum();
        let budget = c.total_budget.0;
        let over = spent as f64 / budget as f64 - 1.0;
        worst_over = worst_over.max(over);
        assert!(
            spent as f64 <= budget as f64 * 1.01,
            "campaign {}: spent {spent} of {budget}",
            c.id
        );
        if let Some(d) = daily[c.id as usize - 1] {
            let target = d as f64 / 24.0;
            for (h, s) in hourly[i].iter().enumerate() {
                let dev = (*s as f64 - target) / target;
                worst_hour = worst_hour.max(dev.abs());
                assert!(
                    dev.abs() <= 0.10,
                    "campaign {} hour {h}: spent {s}, target {target:.0} ({:+.1}%)",
                    c.id,
                    dev * 100.0
                );
            }
        } else {
            // asap: the budget is used up (within one lease) well before the day ends.
            assert!(
                spent as f64 >= budget as f64 * 0.95,
                "asap campaign {} spent {spent} of {budget}",
                c.id
            );
        }
    }
    assert_eq!(store.overdraft, 0);
    println!(
        "pacing simulation: {n} campaigns, worst overspend {:+.3}%, worst hourly deviation {:.2}%",
        worst_over * 100.0,
        worst_hour * 100.0
    );
}

//! Admission by age: which bid requests a core decides and which it answers 204 at once.
//!
//! A request's age is counted from the kernel's receive stamp ([`crate::rxtime`]), so time spent
//! waiting in the socket buffers counts. Three rules, checked before the body is decoded (only
//! `tmax` is looked for, by [`scan_tmax`]):
//!
//! 1. **Expired**: the age already passes the request's budget (`tmax − network margin`): 204
//!    `deadline` — nobody is waiting for the answer any more.
//! 2. **Standing queue** (CoDel-like, the "adaptive" variant used by RPC servers): each request
//!    has a queueing **target**: `bidding.queue_target_us` (5 ms, CoDel's) or
//!    `bidding.shed_queue_pct` (25%) of its budget, whichever is smaller. Per interval
//!    (`bidding.shed_interval_ms`, 100 ms) the core tracks the smallest age seen as a share of
//!    each request's target. If even the freshest request of a whole interval had waited more
//!    than its target, the queue did not drain once: during the next interval every request
//!    older than its target is answered 204 `overloaded` at once. The shed path costs a parse
//!    and a 204, less than a decision, so the queue drains and the requests that are decided
//!    are young. An interval in which a fresh request is seen ends the shedding. The absolute
//!    target makes the rule decisive: a core that cannot keep up sheds most of what it reads
//!    instead of deciding requests that waited a quarter of their budget (at 3× capacity over
//!    1,024 connections the queue stays under the budget share but holds the core to deciding
//!    at capacity, leaving two thirds of the offered requests unsent at the exchange).
//! 3. The per-turn time budget (`bidding.turn_budget_us`, in [`crate::core`]) keeps one turn from
//!    delaying the requests read with it.
//!
//! Owned by one core (inside its `Core`); per request: a few integer operations, no allocation.
//! Must never: shed a request whose age is unknown (no stamp → age counted from the read), nor
//! shed anything while the queue drains.

use std::time::Duration;

use quanta::Instant;

/// What to do with one bid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Its age is past its budget: 204 `deadline`.
    Expired,
    /// A standing queue and this request is older than the target share: 204 `overloaded`.
    Queue,
}

/// Settings (from `bidding.*`).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Share of a request's budget (percent) a request may have waited while a queue stands;
    /// 0 turns the standing-queue rule off (expired requests are still shed).
    pub queue_pct: u32,
    /// Queueing target: the longest a request may have waited while a queue stands, whatever
    /// its budget (the smaller of this and `queue_pct` applies); zero: `queue_pct` alone.
    pub target: Duration,
    /// Window over which the smallest age is taken.
    pub interval: Duration,
}

/// One core's admission state. See the module documentation.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    interval_end: Option<Instant>,
    /// Smallest age ÷ target seen this interval, in per mille (`u32::MAX`: none seen).
    min_permille: u32,
    shedding: bool,
    /// Intervals that ended with a standing queue (exported for the tests and metrics).
    pub standing_intervals: u64,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Admission {
        Admission {
            cfg,
            interval_end: None,
            min_permille: u32::MAX,
            shedding: false,
            standing_intervals: 0,
        }
    }

    /// Called at the start of each loop turn: closes the interval when it is over.
    pub fn begin_turn(&mut self, now: Instant) {
        match self.interval_end {
            Some(end) if now < end => {}
            Some(_) => {
                let standing = self.cfg.queue_pct > 0
                    && self.min_permille != u32::MAX
                    && self.min_permille > 1000;
                if standing {
                    self.standing_intervals += 1;
                }
                self.shedding = standing;
                self.min_permille = u32::MAX;
                self.interval_end = Some(now + self.cfg.interval);
            }
            None => self.interval_end = Some(now + self.cfg.interval),
        }
    }

    /// A standing queue was seen over the last whole interval: old requests are being shed.
    pub fn shedding(&self) -> bool {
        self.shedding
    }

    /// The queueing target of a request whose budget is `budget` (see the module documentation).
    pub fn target(&self, budget: Duration) -> Duration {
        let share = budget * self.cfg.queue_pct / 100;
        if self.cfg.target.is_zero() {
            share
        } else {
            share.min(self.cfg.target)
        }
    }

    /// The verdict for a request `age` old (kernel stamp to now) whose budget is `budget`.
    pub fn admit(&mut self, age: Duration, budget: Duration) -> Verdict {
        let target = self.target(budget);
        let permille = if target.is_zero() {
            u32::MAX - 1
        } else {
            (age.as_nanos() * 1000 / target.as_nanos()).min(u128::from(u32::MAX - 1)) as u32
        };
        self.min_permille = self.min_permille.min(permille);
        if age >= budget {
            Verdict::Expired
        } else if self.shedding && permille > 1000 {
            Verdict::Queue
        } else {
            Verdict::Admit
        }
    }
}

/// The largest `"tmax": N` in a JSON body, found without decoding it (the shed path's only look
/// at the body). The largest of all occurrences, so a `tmax` nested in an extension can only
/// make the request less likely to be shed; the full decode later uses the real one. `None`
/// when there is none (the configured default applies). Values saturate at `u32::MAX`.
pub fn scan_tmax(body: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"tmax\"";
    let mut best: Option<u32> = None;
    let mut at = 0;
    while let Some(k) = memchr::memmem::find(&body[at..], KEY) {
        let mut i = at + k + KEY.len();
        at = i;
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        if body.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        let mut v: u64 = 0;
        while i < body.len() && body[i].is_ascii_digit() {
            v = (v * 10 + u64::from(body[i] - b'0')).min(u64::from(u32::MAX));
            i += 1;
        }
        if i > start {
            let v = v as u32;
            best = Some(best.map_or(v, |b| b.max(v)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn adm(pct: u32) -> (Admission, quanta::Clock, std::sync::Arc<quanta::Mock>) {
        adm_target(pct, Duration::ZERO)
    }

    fn adm_target(
        pct: u32,
        target: Duration,
    ) -> (Admission, quanta::Clock, std::sync::Arc<quanta::Mock>) {
        let (clock, mock) = quanta::Clock::mock();
        let a = Admission::new(AdmissionConfig {
            queue_pct: pct,
            target,
            interval: 100 * MS,
        });
        (a, clock, mock)
    }

    #[test]
    fn the_target_is_the_smaller_of_the_absolute_one_and_the_budget_share() {
        let (a, _, _) = adm_target(25, 5 * MS);
        assert_eq!(a.target(80 * MS), 5 * MS);
        assert_eq!(a.target(230 * MS), 5 * MS);
        assert_eq!(
            a.target(12 * MS),
            3 * MS,
            "a short budget's share is smaller"
        );
        let (a, _, _) = adm(25);
        assert_eq!(
            a.target(80 * MS),
            20 * MS,
            "no absolute target: the share alone"
        );
        let (a, _, _) = adm_target(0, 5 * MS);
        assert_eq!(a.target(80 * MS), Duration::ZERO);
    }

    #[test]
    fn with_an_absolute_target_a_queue_under_the_budget_share_still_stands_and_is_shed() {
        let (mut a, clock, m) = adm_target(25, 5 * MS);
        a.begin_turn(clock.now());
        // A core that cannot keep up: every request of the interval waited 6–15 ms of an
        // 80 ms budget — under the 25% share (20 ms), over the 5 ms target.
        for age in [6u32, 9, 12, 15] {
            assert_eq!(
                a.admit(age * MS, 80 * MS),
                Verdict::Admit,
                "not yet shedding"
            );
        }
        m.increment(100 * MS);
        a.begin_turn(clock.now());
        assert!(a.shedding());
        // Everything older than 5 ms is answered 204 at once, whatever its budget...
        assert_eq!(a.admit(6 * MS, 80 * MS), Verdict::Queue);
        assert_eq!(a.admit(6 * MS, 230 * MS), Verdict::Queue);
        // ...the young are decided, and show the queue drained.
        assert_eq!(a.admit(4 * MS, 80 * MS), Verdict::Admit);
        m.increment(100 * MS);
        a.begin_turn(clock.now());
        assert!(!a.shedding());
        assert_eq!(a.admit(12 * MS, 80 * MS), Verdict::Admit);
        // Without the absolute target the same queue never counts as standing.
        let (mut b, clock, m) = adm(25);
        b.begin_turn(clock.now());
        for age in [6u32, 9, 12, 15] {
            b.admit(age * MS, 80 * MS);
        }
        m.increment(100 * MS);
        b.begin_turn(clock.now());
        assert!(!b.shedding());
    }

    #[test]
    fn expired_requests_are_shed_and_fresh_ones_admitted() {
        let (mut a, clock, _m) = adm(25);
        a.begin_turn(clock.now());
        assert_eq!(a.admit(80 * MS, 80 * MS), Verdict::Expired);
        assert_eq!(a.admit(900 * MS, 80 * MS), Verdict::Expired);
        assert_eq!(a.admit(79 * MS, 80 * MS), Verdict::Admit);
        assert_eq!(a.admit(Duration::ZERO, Duration::ZERO), Verdict::Expired);
    }

    #[test]
    fn a_standing_queue_sheds_old_requests_for_the_next_interval_then_stops() {
        let (mut a, clock, m) = adm(25);
        a.begin_turn(clock.now());
        // A whole interval in which every request waited 30–60% of its budget.
        for age in [30u32, 40, 50, 60, 48] {
            assert_eq!(
                a.admit(age * MS, 100 * MS),
                Verdict::Admit,
                "not yet shedding"
            );
        }
        m.increment(100 * MS);
        a.begin_turn(clock.now());
        assert!(a.shedding());
        assert_eq!(a.standing_intervals, 1);
        assert_eq!(a.admit(26 * MS, 100 * MS), Verdict::Queue);
        assert_eq!(
            a.admit(25 * MS, 100 * MS),
            Verdict::Admit,
            "at the target: kept"
        );
        // The share counts per request: 26 ms of a 200 ms budget is young.
        assert_eq!(a.admit(26 * MS, 200 * MS), Verdict::Admit);
        assert_eq!(a.admit(100 * MS, 100 * MS), Verdict::Expired);
        // Shedding drained the queue: a fresh request is seen in this interval...
        assert_eq!(a.admit(MS, 100 * MS), Verdict::Admit);
        m.increment(100 * MS);
        a.begin_turn(clock.now());
        // ...so the next interval sheds nothing but expired requests.
        assert!(!a.shedding());
        assert_eq!(a.admit(60 * MS, 100 * MS), Verdict::Admit);
        assert_eq!(a.admit(100 * MS, 100 * MS), Verdict::Expired);
    }

    #[test]
    fn an_interval_without_requests_or_with_the_rule_off_never_sheds() {
        let (mut a, clock, m) = adm(25);
        a.begin_turn(clock.now());
        m.increment(100 * MS);
        a.begin_turn(clock.now());
        assert!(!a.shedding());
        let (mut off, clock, m) = adm(0);
        off.begin_turn(clock.now());
        assert_eq!(off.admit(90 * MS, 100 * MS), Verdict::Admit);
        m.increment(100 * MS);
        off.begin_turn(clock.now());
        assert!(!off.shedding());
        assert_eq!(off.admit(90 * MS, 100 * MS), Verdict::Admit);
        assert_eq!(off.admit(100 * MS, 100 * MS), Verdict::Expired);
    }

    #[test]
    fn turns_within_an_interval_keep_its_minimum() {
        let (mut a, clock, m) = adm(25);
        a.begin_turn(clock.now());
        a.admit(50 * MS, 100 * MS);
        m.increment(50 * MS);
        a.begin_turn(clock.now()); // same interval
        a.admit(10 * MS, 100 * MS); // one fresh request in it
        m.increment(50 * MS);
        a.begin_turn(clock.now());
        assert!(
            !a.shedding(),
            "the freshest request of the interval was under target"
        );
    }

    #[test]
    fn tmax_is_found_without_decoding() {
        assert_eq!(scan_tmax(br#"{"id":"1","tmax":120,"imp":[]}"#), Some(120));
        assert_eq!(scan_tmax(br#"{"id":"1", "tmax" :	 250 }"#), Some(250));
        assert_eq!(scan_tmax(br#"{"id":"1","imp":[]}"#), None);
        // The largest occurrence wins (an extension's field cannot shorten the budget).
        assert_eq!(scan_tmax(br#"{"tmax":100,"ext":{"tmax":300}}"#), Some(300));
        assert_eq!(scan_tmax(br#"{"ext":{"tmax":30},"tmax":100}"#), Some(100));
        // Not a number, a key inside a string, truncated: ignored.
        assert_eq!(scan_tmax(br#"{"tmax":"x","a":"\"tmax\":5"}"#), None);
        assert_eq!(scan_tmax(br#"{"tmax""#), None);
        assert_eq!(scan_tmax(br#"{"tmax":"#), None);
        // Huge values saturate.
        assert_eq!(
            scan_tmax(br#"{"tmax":99999999999999999999999}"#),
            Some(u32::MAX)
        );
    }
}

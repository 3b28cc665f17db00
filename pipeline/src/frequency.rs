//! `frequency`: billing side effects in Redis, off the bidding cores.
//!
//! Owns the frequency worker thread and its bounded queue. The producer thread pushes one
//! [`FreqIncrement`] per billing event that carries a user id (consent); the worker applies them
//! in pipelined batches following the profile contract (docs/PROFILES.md):
//! `HINCRBY helios:profile:{user_id} f:{campaign_id}:{unix_hour} 1`, then
//! `XADD helios:profile:changes MAXLEN ~ 1000000 * k {user_id}` so every node's profile replica
//! picks it up.
//! Both run in one Lua script guarded by `SET helios:freq:seen:{event_id} NX EX ttl`, so a
//! repeated billing notice (same event id) counts once, and a retried batch never double-counts.
//! Must never block the producer thread (a full queue drops the increment, counted
//! `freq_dropped`) and never retry without bound (`freq_max_attempts`, then `freq_failed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codec::event::{Event, EventKind, InlineStr};
use crossbeam_queue::ArrayQueue;

use crate::metrics::Counters;

/// Largest number of increments sent to Redis in one pipeline.
const BATCH: usize = 256;

/// The key of the stream every profile change is announced on.
pub const CHANGES_STREAM: &str = "helios:profile:changes";
/// `MAXLEN ~` of the change stream (docs/PROFILES.md).
pub const CHANGES_MAXLEN: u64 = 1_000_000;

const SCRIPT: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'k', ARGV[2])
  return 1
end
return 0
";

/// One frequency-counter increment (a billed impression for a consenting user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreqIncrement {
    pub user_id: InlineStr<64>,
    pub campaign_id: u32,
    pub unix_hour: u64,
    pub event_id: [u8; 16],
}

impl FreqIncrement {
    /// The increment a billing event causes, if any (billing, a user id, not a test request).
    pub fn from_event(e: &Event) -> Option<FreqIncrement> {
        if e.kind != EventKind::Billing
            || e.user_id.as_str().is_empty()
            || e.campaign_id == 0
            || e.flags & codec::event::flags::TEST != 0
        {
            return None;
        }
        Some(FreqIncrement {
            user_id: e.user_id,
            campaign_id: e.campaign_id,
            unix_hour: e.ts_unix_ns / 3_600_000_000_000,
            event_id: e.event_id,
        })
    }

    pub fn profile_key(&self) -> String {
        format!("helios:profile:{}", self.user_id.as_str())
    }

    pub fn field(&self) -> String {
        format!("f:{}:{}", self.campaign_id, self.unix_hour)
    }
}

/// The worker thread and the producer side of its queue.
#[derive(Debug)]
pub(crate) struct FreqWorker {
    queue: Arc<ArrayQueue<FreqIncrement>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FreqWorker {
    /// `ca_pem` verifies a `rediss://` server (`None`: the system's trust store).
    pub(crate) fn start(
        url: &str,
        ca_pem: Option<&[u8]>,
        capacity: usize,
        max_attempts: u32,
        dedupe_ttl_s: u64,
        counters: Arc<Counters>,
    ) -> Result<FreqWorker, redis::RedisError> {
        let client = match ca_pem {
            Some(pem) if url.starts_with("rediss://") => {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                };
                redis::Client::build_with_tls(url, certs)?
            }
            _ => redis::Client::open(url)?,
        };
        let queue = Arc::new(ArrayQueue::new(capacity.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Worker {
            client,
            conn: None,
            sha: String::new(),
            queue: queue.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            max_attempts: max_attempts.max(1),
            ttl: dedupe_ttl_s.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("helios-freq".into())
            .spawn(move || w.run())
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
        Ok(FreqWorker {
            queue,
            counters,
            stop,
            handle: Some(handle),
        })
    }

    /// Wakes the worker (parked while it has nothing to do): called by the producer thread
    /// once per turn in which it pushed increments, not per increment.
    pub(crate) fn wake(&self) {
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
    }

    /// Called by the producer thread; never blocks.
    pub(crate) fn push(&self, inc: FreqIncrement) {
        if self.queue.push(inc).is_err() {
            let n = self.counters.freq_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "pipeline: frequency worker queue full; increment dropped (counted)"
                );
            }
        }
    }

    /// Stops the worker after it has applied what is queued (bounded by `timeout`).
    pub(crate) fn shutdown(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.queue.is_empty() && Instant::now() < deadline {
            self.wake();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        let left = self.queue.len() as u64;
        if left > 0 {
            Counters::add(&self.counters.freq_failed, left);
            tracing::warn!(
                left,
                "pipeline: frequency increments not applied before shutdown"
            );
        }
    }
}

impl Drop for FreqWorker {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.shutdown(Duration::from_secs(1));
        }
    }
}

/// Longest park of an idle worker: the producer thread wakes it when it pushes increments
/// (and the shutdown does), so this only bounds a lost wake-up.
const IDLE_PARK_MAX: Duration = Duration::from_millis(200);

struct Worker {
    client: redis::Client,
    conn: Option<redis::Connection>,
    sha: String,
    queue: Arc<ArrayQueue<FreqIncrement>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    max_attempts: u32,
    ttl: u64,
}

impl Worker {
    fn run(&mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            while batch.len() < BATCH {
                match self.queue.pop() {
                    Some(i) => batch.push(i),
                    None => break,
                }
            }
            if batch.is_empty() {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                // Idle: park until the producer thread hands over increments (it wakes this
                // thread once per turn that pushed some). A timed sleep here woke the thread
                // 50 times a second for nothing, each wake-up costing CPU a bidding core may
                // share; this node's cores count a billing at once anyway.
                std::thread::park_timeout(IDLE_PARK_MAX);
                continue;
            }
            self.apply_with_retries(&batch);
            batch.clear();
        }
    }

    fn apply_with_retries(&mut self, batch: &[FreqIncrement]) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=self.max_attempts {
            match self.apply(batch) {
                Ok((applied, dup)) => {
                    Counters::add(&self.counters.freq_applied, applied);
                    Counters::add(&self.counters.freq_duplicate, dup);
                    return;
                }
                Err(e) => {
                    self.conn = None;
                    tracing::warn!(attempt, max = self.max_attempts, error = %e, "pipeline: frequency batch failed");
                    if attempt < self.max_attempts && !self.stop.load(Ordering::Acquire) {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
        Counters::add(&self.counters.freq_failed, batch.len() as u64);
        tracing::error!(
            increments = batch.len(),
            "pipeline: frequency increments given up after bounded retries (counted freq_failed)"
        );
    }

    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            let mut c = self
                .client
                .get_connection_with_timeout(Duration::from_secs(1))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.set_write_timeout(Some(Duration::from_secs(2)))?;
            self.sha = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).query(&mut c)?;
            self.conn = Some(c);
        }
        // Set just above.
        Ok(self.conn.as_mut().expect("connection was just set"))
    }

    /// Returns (applied, duplicates).
    fn apply(&mut self, batch: &[FreqIncrement]) -> redis::RedisResult<(u64, u64)> {
        let ttl = self.ttl;
        let sha = {
            self.connection()?;
            self.sha.clone()
        };
        let mut pipe = redis::pipe();
        for inc in batch {
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(3)
                .arg(format!(
                    "helios:freq:seen:{}",
                    codec::event::hex(&inc.event_id)
                ))
                .arg(inc.profile_key())
                .arg(CHANGES_STREAM)
                .arg(inc.field())
                .arg(inc.user_id.as_str())
                .arg(ttl)
                .arg(CHANGES_MAXLEN);
        }
        let conn = self.connection()?;
        let results: Vec<i64> = pipe.query(conn)?;
        let applied = results.iter().filter(|&&r| r == 1).count() as u64;
        Ok((applied, results.len() as u64 - applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_billing_with_user_counts() {
        let mut e = Event::new(EventKind::Billing);
        e.campaign_id = 7;
        e.ts_unix_ns = 3 * 3_600_000_000_000 + 5;
        assert!(FreqIncrement::from_event(&e).is_none(), "no user id");
        e.user_id = InlineStr::new("u1");
        let inc = FreqIncrement::from_event(&e).unwrap();
        assert_eq!(inc.unix_hour, 3);
        assert_eq!(inc.profile_key(), "helios:profile:u1");
        assert_eq!(inc.field(), "f:7:3");
        e.flags = codec::event::flags::TEST;
        assert!(
            FreqIncrement::from_event(&e).is_none(),
            "test requests are never counted"
        );
        let mut w = Event::new(EventKind::Win);
        w.user_id = InlineStr::new("u1");
        w.campaign_id = 7;
        assert!(FreqIncrement::from_event(&w).is_none());
    }
}

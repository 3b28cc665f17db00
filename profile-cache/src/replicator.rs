//! The replicator thread: copies the profiles out of Redis and keeps the copy current.
//!
//! Owns the replica's only [`Store`] (the writer) and one Redis connection, on a thread of its
//! own. Bidding cores never wait for it: they read through [`Reader`]s while it applies changes.
//!
//! Protocol (see `docs/PROFILES.md`):
//! 1. Bootstrap: record the change stream's `last-generated-id` *before* copying, then `SCAN`
//!    the profile hashes in batches and fetch each batch with pipelined `HGETALL`. Profiles not
//!    seen in this copy (deleted while we could not follow the stream) are swept afterwards.
//! 2. Follow: from the recorded id, read the stream in batches; each read is a `MULTI` of
//!    `XINFO STREAM` and `XREAD`, so the check "was anything we have not read trimmed or deleted?"
//!    (`max-deleted-entry-id` > last applied id) is atomic with the read. Each entry names a user
//!    id; the replicator re-reads that hash (state-based, so order and duplicates do not matter).
//!    When a read returns less than a full batch the replica is current as of that read. When
//!    the stream is empty it waits with `XREAD BLOCK` (bounded) as a wake-up.
//! 3. Failures: any Redis error drops the connection; the thread reconnects with exponential
//!    backoff between `backoff_min` and `backoff_max`, resumes from the last applied id, and
//!    re-bootstraps if the stream lost entries it had not read. Meanwhile readers keep the last
//!    data and staleness grows (`Reader::lag_seconds`).
//! 4. Snapshot (optional, [`ReplicaConfig::snapshot_path`]): at start, before connecting, load
//!    the snapshot and resume from its stream position instead of bootstrapping (a corrupt,
//!    foreign or other-namespace file is logged and ignored); while running, a short-lived
//!    `profile-snapshot` thread rewrites it every `snapshot_interval` (and soon after each
//!    bootstrap); at stop, this thread writes a last one ([`crate::snapshot`]).
//!
//! Must never: block a reader, panic on anything Redis returns, or lose a change silently.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::Value;
use tracing::{debug, info, warn};

use crate::keys;
use crate::parse::{Field, apply_field};
use crate::record::ProfileData;
use crate::snapshot::{self, Outcome, Position, SnapshotError};
use crate::store::{Reader, Stats, Store, now_ms};

/// How to reach Redis and how the replica behaves. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6390/`, or `rediss://…` for TLS.
    pub redis_url: String,
    /// PEM of the CA(s) that verify a `rediss://` server; `None` = the system's trust store.
    /// Ignored for `redis://`.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// Key namespace (`helios` → `helios:profile:{id}`, `helios:profile:changes`).
    pub namespace: String,
    /// Profiles expected; sizes the index (it grows if exceeded) and maps one 128-byte home
    /// block per expected profile up front (`home.rs`; profiles beyond it live outside home
    /// blocks, looked up one memory round trip slower).
    pub expected_profiles: usize,
    /// Staleness after which [`Reader::is_fresh`] turns false (bid contextually only).
    pub max_staleness: Duration,
    /// Keys per `SCAN` step (`COUNT`) during bootstrap.
    pub scan_batch: usize,
    /// Stream entries per read.
    pub stream_batch: usize,
    /// How long an idle `XREAD BLOCK` waits; also bounds how long [`Replicator::stop`] takes.
    pub block: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read/write timeout of one command (a slow Redis counts as down after this).
    pub io_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Frequency buckets older than this many hours are not replicated.
    pub freq_window_hours: u32,
    /// On-disk snapshot for fast restarts (`None`, the default: none; a restart copies every
    /// profile from Redis). The directory must exist; `{path}.tmp` is used while writing.
    pub snapshot_path: Option<PathBuf>,
    /// How often the snapshot is rewritten while running (it is also written soon after each
    /// bootstrap and at stop).
    pub snapshot_interval: Duration,
    /// Run the replicator thread under `SCHED_FIFO` at this priority (1–99) while it follows the
    /// stream, so that a change waits for no other thread's time slice (`None`, the default:
    /// normal scheduling). Bootstraps, snapshot loads and writes run at normal priority (they are
    /// long and CPU-bound; threads it spawns never inherit the policy). Needs `CAP_SYS_NICE`
    /// (root); without it, a warning is logged and the thread stays at normal priority. On a
    /// machine whose CPUs are oversubscribed this is what keeps the apply lag in milliseconds
    /// (`bench/RESULTS.md`); the cost is that the thread's short bursts preempt other threads.
    pub follow_fifo_priority: Option<u8>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6390/".into(),
            redis_ca_pem: None,
            namespace: keys::DEFAULT_NAMESPACE.into(),
            expected_profiles: 1_000_000,
            max_staleness: Duration::from_secs(30),
            scan_batch: 1000,
            stream_batch: 1000,
            block: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            freq_window_hours: 24 * 31,
            snapshot_path: None,
            snapshot_interval: Duration::from_secs(300),
            follow_fifo_priority: None,
        }
    }
}

/// Why the replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Redis URL does not parse (or its TLS CA PEM does not).
    #[error("invalid Redis URL or TLS CA: {0}")]
    Url(#[source] redis::RedisError),
    /// A bound in the configuration is zero.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The thread could not be spawned.
    #[error("cannot spawn the replicator thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Apply lag of stream entries, milliseconds: time from `XADD` (the entry id's clock) to the
/// change being readable. Up to one minute is recorded exactly; more is clamped to a minute.
pub type LagHistogram = Histogram<u64>;
const LAG_MAX_MS: u64 = 60_000;
/// Nice value of the periodic snapshot thread (it is long, and nothing waits for it).
const SNAPSHOT_NICE: libc::c_int = 10;
/// A follow cycle (read, fetch, apply) at least this long is logged at debug level with its parts.
const SLOW_CYCLE: Duration = Duration::from_millis(20);

/// Handle on the running replicator thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct Replicator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    reader: Reader,
    lag: Arc<Mutex<LagHistogram>>,
}

/// Starts the replica: spawns the replicator thread and returns its handle and a first reader.
/// Does not wait for Redis: the replica starts empty and unloaded ([`Reader::is_loaded`]) and
/// fills in the background; a Redis that is down is retried with backoff.
pub fn start(cfg: &ReplicaConfig) -> Result<(Replicator, Reader), StartError> {
    if cfg.scan_batch == 0 || cfg.stream_batch == 0 {
        return Err(StartError::Config(
            "scan_batch and stream_batch must be ≥ 1",
        ));
    }
    if cfg.backoff_min.is_zero() || cfg.backoff_max < cfg.backoff_min {
        return Err(StartError::Config("need 0 < backoff_min ≤ backoff_max"));
    }
    if cfg.snapshot_path.is_some() && cfg.snapshot_interval.is_zero() {
        return Err(StartError::Config("snapshot_interval must be > 0"));
    }
    if cfg
        .follow_fifo_priority
        .is_some_and(|p| !(1..=99).contains(&p))
    {
        return Err(StartError::Config("follow_fifo_priority must be 1–99"));
    }
    let client = match &cfg.redis_ca_pem {
        Some(pem) if cfg.redis_url.starts_with("rediss://") => {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            redis::Client::build_with_tls(cfg.redis_url.as_str(), certs)
        }
        _ => redis::Client::open(cfg.redis_url.as_str()),
    }
    .map_err(StartError::Url)?;
    let max_staleness_ms = cfg.max_staleness.as_millis().min(u128::from(u64::MAX)) as u64;
    let (store, reader) = Store::new(cfg.expected_profiles, max_staleness_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let lag = Arc::new(Mutex::new(
        Histogram::new_with_max(LAG_MAX_MS, 3).expect("static histogram bounds are valid"),
    ));
    let worker = Worker {
        cfg: cfg.clone(),
        client,
        store,
        stop: Arc::clone(&stop),
        lag: Arc::clone(&lag),
        prefix: keys::profile_prefix(&cfg.namespace),
        stream: keys::changes_stream(&cfg.namespace),
        last_id: None,
        read_count: 0,
        data: ProfileData::default(),
        ids: Vec::with_capacity(cfg.stream_batch.max(cfg.scan_batch)),
        connected_before: false,
        snapshot_thread: None,
        next_snapshot: Instant::now() + cfg.snapshot_interval,
        fetch_wait: Duration::ZERO,
        fifo: false,
        fifo_refused: false,
    };
    let thread = std::thread::Builder::new()
        .name("profile-replica".into())
        .spawn(move || worker.run())
        .map_err(StartError::Spawn)?;
    let handle = Replicator {
        stop,
        thread: Some(thread),
        reader: reader.clone(),
        lag,
    };
    Ok((handle, reader))
}

impl Replicator {
    /// Stops the thread and waits for it: at most about one `block` interval plus one command's
    /// `io_timeout`, plus writing the last snapshot when one is configured (≈ 1 s per million
    /// profiles here). Readers keep working on the last data.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("profile replicator thread panicked");
        }
    }

    /// The replica's counters.
    pub fn stats(&self) -> Stats {
        self.reader.stats()
    }

    /// A copy of the apply-lag histogram (milliseconds from `XADD` to readable).
    pub fn lag_histogram(&self) -> LagHistogram {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Clears the apply-lag histogram (benchmarks measure one phase at a time).
    pub fn reset_lag_histogram(&self) {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).reset();
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A stream entry id `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    fn parse(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?;
        let (ms, seq) = s.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What `XINFO STREAM` says about the stream's position.
#[derive(Debug, Default, Clone, Copy)]
struct StreamInfo {
    exists: bool,
    last_generated: StreamId,
    max_deleted: StreamId,
    first_entry: StreamId,
    entries_added: u64,
    length: u64,
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => bytes_of(other).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
    }
}

/// Key/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

fn parse_info(v: &Value) -> Result<StreamInfo, redis::RedisError> {
    if let Value::ServerError(e) = v {
        // "ERR no such key": the stream does not exist (yet, or any more).
        if e.details().is_some_and(|d| d.contains("no such key")) {
            return Ok(StreamInfo::default());
        }
        return Err(redis::RedisError::from(e.clone()));
    }
    let mut info = StreamInfo {
        exists: true,
        ..Default::default()
    };
    for (k, val) in pairs(v) {
        match bytes_of(k) {
            Some(b"last-generated-id") => {
                info.last_generated = bytes_of(val).and_then(StreamId::parse).unwrap_or_default();
            }
            Some(b"max-deleted-entry-id") => {
                info.max_deleted = bytes_of(val).and_then(StreamId::parse).unwrap_or_default();
            }
            Some(b"recorded-first-entry-id") => {
                info.first_entry = bytes_of(val).and_then(StreamId::parse).unwrap_or_default();
            }
            Some(b"entries-added") => info.entries_added = int_of(val).unwrap_or(0),
            Some(b"length") => info.length = int_of(val).unwrap_or(0),
            _ => {}
        }
    }
    Ok(info)
}

/// Whether the stream lost entries after `last` that the replica has not read, and why.
/// `read_count` is the number of entries ever added up to and including `last`.
fn gap(info: &StreamInfo, last: StreamId, read_count: u64) -> Option<&'static str> {
    if !info.exists {
        // Deleted (or never created): a loss only if we had read from it.
        return (last != StreamId::default()).then_some("stream deleted");
    }
    if info.last_generated < last || info.entries_added < read_count {
        return Some("stream recreated");
    }
    if info.max_deleted > last {
        return Some("entries after the last applied id deleted (XDEL)");
    }
    let unread = info.entries_added - read_count;
    // Trimming removes from the head: entries after `last` are intact unless the head moved
    // past `last`, in which case every unread entry must still be there.
    let head_past_last = info.length == 0 || info.first_entry > last;
    (head_past_last && info.length < unread).then_some("trimmed past the last applied id")
}

struct Worker {
    cfg: ReplicaConfig,
    client: redis::Client,
    store: Store,
    stop: Arc<AtomicBool>,
    lag: Arc<Mutex<LagHistogram>>,
    prefix: String,
    stream: String,
    /// Last stream id applied; `None` until a bootstrap completes (or after a gap).
    last_id: Option<StreamId>,
    /// Entries ever added to the stream up to and including `last_id`: `entries-added` at the
    /// recorded start point plus every entry read since. Tells whether trimming removed entries
    /// after `last_id` (`XTRIM` does not move `max-deleted-entry-id`).
    read_count: u64,
    data: ProfileData,
    ids: Vec<Vec<u8>>,
    connected_before: bool,
    /// The running periodic snapshot writer, if any (at most one).
    snapshot_thread: Option<JoinHandle<Result<Outcome, SnapshotError>>>,
    /// When the next periodic snapshot is due.
    next_snapshot: Instant,
    /// Time the last `fetch_and_apply` spent waiting for Redis (the pipelined `HGETALL`s).
    fetch_wait: Duration,
    /// Whether this thread currently runs under `SCHED_FIFO`.
    fifo: bool,
    /// Whether raising the priority failed once already (warned; not retried).
    fifo_refused: bool,
}

type RResult<T> = Result<T, redis::RedisError>;

impl Worker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Switches this thread to the follow priority (`follow = true`) or back to normal
    /// scheduling. `SCHED_RESET_ON_FORK`: threads spawned meanwhile start at normal priority.
    fn set_priority(&mut self, follow: bool) {
        let want = follow && !self.fifo_refused && self.cfg.follow_fifo_priority.is_some();
        if want == self.fifo {
            return;
        }
        let (policy, prio) = match (want, self.cfg.follow_fifo_priority) {
            (true, Some(p)) => (libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, i32::from(p)),
            _ => (libc::SCHED_OTHER, 0),
        };
        let param = libc::sched_param {
            sched_priority: prio,
        };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter struct.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
            self.fifo = want;
            debug!(
                fifo = want,
                priority = prio,
                "profile replica: scheduling changed"
            );
        } else if want {
            self.fifo_refused = true;
            warn!(error = %std::io::Error::last_os_error(), priority = prio,
                "profile replica: cannot run under SCHED_FIFO (needs CAP_SYS_NICE); \
                 following at normal priority");
        }
    }

    fn run(mut self) {
        self.load_snapshot();
        let mut backoff = self.cfg.backoff_min;
        while !self.stopped() {
            match self.session(&mut backoff) {
                Ok(()) => break,
                Err(e) => {
                    let c = &self.store.shared().counters;
                    c.redis_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64,
                        last_id = ?self.last_id.map(|i| i.to_string()),
                        "profile replica: Redis unavailable, serving the last data");
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                }
            }
        }
        self.set_priority(false);
        self.final_snapshot();
        debug!("profile replicator stopped");
    }

    /// Loads the configured snapshot, if any, and resumes from its stream position.
    fn load_snapshot(&mut self) {
        let Some(path) = self.cfg.snapshot_path.clone() else {
            return;
        };
        let shared = Arc::clone(self.store.shared());
        let c = &shared.counters;
        match snapshot::load(&path, &self.cfg.namespace, &mut self.store) {
            Ok((pos, out)) => {
                let last = StreamId {
                    ms: pos.last_id.0,
                    seq: pos.last_id.1,
                };
                self.last_id = Some(last);
                self.read_count = pos.read_count;
                c.snapshot_loaded_profiles
                    .store(out.profiles, Ordering::Relaxed);
                // Loaded, and exactly as stale as the snapshot: `is_fresh` turns true once the
                // stream has been caught up (or at once if the snapshot is recent enough).
                self.store.mark_synced(pos.synced_at_ms);
                info!(path = %path.display(), profiles = out.profiles, bytes = out.bytes,
                    ms = out.ms, last_id = %last,
                    age_s = now_ms().saturating_sub(pos.synced_at_ms) / 1000,
                    "profile replica: snapshot loaded; catching up from the stream");
            }
            Err(SnapshotError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                info!(path = %path.display(),
                    "profile replica: no snapshot yet; bootstrapping from Redis");
            }
            Err(e) => {
                c.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "profile replica: snapshot ignored; bootstrapping from Redis");
            }
        }
    }

    /// The stream position the store is current up to, or `None` while it is not consistent
    /// (no bootstrap completed, or a re-bootstrap in progress).
    fn position(&self) -> Option<Position> {
        let last = self.last_id?;
        let f = &self.store.shared().freshness;
        if !f.loaded.load(Ordering::Acquire) {
            return None;
        }
        Some(Position {
            last_id: (last.ms, last.seq),
            read_count: self.read_count,
            synced_at_ms: f.synced_at_ms.load(Ordering::Acquire),
            created_ms: now_ms(),
        })
    }

    /// Records how a snapshot write ended.
    fn snapshot_done(&self, r: Result<Outcome, SnapshotError>) {
        let c = &self.store.shared().counters;
        match r {
            Ok(o) => {
                c.snapshots_written.fetch_add(1, Ordering::Relaxed);
                c.last_snapshot_ms.store(o.ms, Ordering::Relaxed);
                info!(
                    profiles = o.profiles,
                    bytes = o.bytes,
                    ms = o.ms,
                    "profile replica: snapshot written"
                );
            }
            Err(e) => {
                c.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "profile replica: snapshot not written");
            }
        }
    }

    /// Collects a finished snapshot writer (or waits for it when `wait`).
    fn reap_snapshot(&mut self, wait: bool) {
        if self
            .snapshot_thread
            .as_ref()
            .is_some_and(|t| wait || t.is_finished())
            && let Some(t) = self.snapshot_thread.take()
        {
            let r = t.join().unwrap_or_else(|_| {
                Err(SnapshotError::Malformed {
                    path: self.cfg.snapshot_path.clone().unwrap_or_default(),
                    what: "the snapshot thread panicked",
                })
            });
            self.snapshot_done(r);
        }
    }

    /// Starts a periodic snapshot on its own thread when one is due and the store is consistent.
    fn maybe_snapshot(&mut self) {
        let Some(path) = self.cfg.snapshot_path.clone() else {
            return;
        };
        self.reap_snapshot(false);
        if self.snapshot_thread.is_some() || Instant::now() < self.next_snapshot {
            return;
        }
        let Some(pos) = self.position() else { return };
        self.next_snapshot = Instant::now() + self.cfg.snapshot_interval;
        let reader = self.store.reader();
        let ns = self.cfg.namespace.clone();
        match std::thread::Builder::new()
            .name("profile-snapshot".into())
            .spawn(move || {
                // Background work: yield the CPU to bidding cores and the replicator (nice 10;
                // on Linux `setpriority(PRIO_PROCESS, 0)` applies to the calling thread).
                // SAFETY: plain syscall on the calling thread; failure only leaves it at nice 0.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_NICE) };
                snapshot::write(&path, &ns, &reader, &pos)
            }) {
            Ok(t) => self.snapshot_thread = Some(t),
            Err(e) => self.snapshot_done(Err(SnapshotError::Io {
                path: self.cfg.snapshot_path.clone().unwrap_or_default(),
                source: e,
            })),
        }
    }

    /// At stop: waits for a running snapshot, then writes the last one from this thread.
    fn final_snapshot(&mut self) {
        let Some(path) = self.cfg.snapshot_path.clone() else {
            return;
        };
        self.reap_snapshot(true);
        let Some(pos) = self.position() else {
            info!("profile replica: stopped while not consistent; no snapshot written");
            return;
        };
        let reader = self.store.reader();
        let r = snapshot::write(&path, &self.cfg.namespace, &reader, &pos);
        drop(reader);
        self.snapshot_done(r);
    }

    /// Sleeps `d`, waking early on stop.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }

    /// One connection's life: connect, bootstrap if needed, follow until stop or error.
    fn session(&mut self, backoff: &mut Duration) -> RResult<()> {
        let mut con = self
            .client
            .get_connection_with_timeout(self.cfg.connect_timeout)?;
        con.set_read_timeout(Some(self.cfg.io_timeout + self.cfg.block))?;
        con.set_write_timeout(Some(self.cfg.io_timeout))?;
        if self.connected_before {
            self.store
                .shared()
                .counters
                .reconnects
                .fetch_add(1, Ordering::Relaxed);
            info!(last_id = ?self.last_id.map(|i| i.to_string()), "profile replica: reconnected");
        }
        self.connected_before = true;
        *backoff = self.cfg.backoff_min;
        loop {
            if self.stopped() {
                return Ok(());
            }
            if self.last_id.is_none() {
                self.set_priority(false);
                self.bootstrap(&mut con)?;
                continue;
            }
            self.set_priority(true);
            self.follow_once(&mut con)?;
            self.maybe_snapshot();
        }
    }

    fn stream_info(&self, con: &mut redis::Connection) -> RResult<StreamInfo> {
        let mut p = redis::pipe();
        p.ignore_errors()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(&self.stream);
        let r: Vec<Value> = p.query(con)?;
        parse_info(r.first().unwrap_or(&Value::Nil))
    }

    fn bootstrap(&mut self, con: &mut redis::Connection) -> RResult<()> {
        let t0 = Instant::now();
        let generation = self.store.next_generation();
        // The point to follow from, recorded before the copy: whatever changes during the copy
        // is in the stream after it and is re-read afterwards.
        let info = self.stream_info(con)?;
        let start = info.last_generated;
        self.read_count = info.entries_added;
        info!(start = %start, generation, "profile replica: bootstrap started");
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            if self.stopped() {
                return Ok(());
            }
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(self.cfg.scan_batch)
                .arg("TYPE")
                .arg("hash")
                .query(con)?;
            self.ids.clear();
            for k in keys {
                if let Some(id) = k.strip_prefix(self.prefix.as_bytes()) {
                    self.ids.push(id.to_vec());
                }
            }
            self.fetch_and_apply(con)?;
            self.store.collect();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let swept = self.store.sweep(generation);
        self.store.collect();
        self.last_id = Some(start);
        // A fresh copy is worth keeping: snapshot as soon as the stream is caught up.
        self.next_snapshot = Instant::now();
        let ms = t0.elapsed().as_millis() as u64;
        let c = &self.store.shared().counters;
        c.bootstraps.fetch_add(1, Ordering::Relaxed);
        c.last_bootstrap_ms.store(ms, Ordering::Relaxed);
        info!(
            profiles = self.store.len(),
            swept, ms, "profile replica: bootstrap done"
        );
        Ok(())
    }

    /// Fetches the profiles named in `self.ids` (pipelined `HGETALL`) and applies them.
    fn fetch_and_apply(&mut self, con: &mut redis::Connection) -> RResult<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.ignore_errors();
        let mut key = Vec::with_capacity(self.prefix.len() + 64);
        for id in &self.ids {
            key.clear();
            key.extend_from_slice(self.prefix.as_bytes());
            key.extend_from_slice(id);
            p.cmd("HGETALL").arg(&key[..]);
        }
        let t = Instant::now();
        let replies: Vec<Value> = p.query(con)?;
        self.fetch_wait = t.elapsed();
        let min_hour = (now_ms() / 3_600_000).saturating_sub(u64::from(self.cfg.freq_window_hours));
        let min_hour = u32::try_from(min_hour).unwrap_or(u32::MAX);
        let ids = std::mem::take(&mut self.ids);
        for (id, reply) in ids.iter().zip(replies.iter()) {
            self.apply_one(id, reply, min_hour);
        }
        self.ids = ids;
        Ok(())
    }

    fn apply_one(&mut self, id: &[u8], reply: &Value, min_hour: u32) {
        let c = &self.store.shared().counters;
        let Ok(id) = std::str::from_utf8(id) else {
            c.malformed_profiles.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let fields = match reply {
            // Not a hash (WRONGTYPE) or any other per-key error: not a profile any more.
            Value::ServerError(_) => {
                c.malformed_profiles.fetch_add(1, Ordering::Relaxed);
                self.store.remove(id);
                return;
            }
            other => pairs(other),
        };
        if fields.is_empty() {
            // The key does not exist: the profile was deleted.
            self.store.remove(id);
            return;
        }
        self.data.clear();
        self.data.user_id.push_str(id);
        let mut malformed = 0u64;
        for (name, value) in fields {
            let (Some(name), Some(value)) = (bytes_of(name), bytes_of(value)) else {
                malformed += 1;
                continue;
            };
            if apply_field(&mut self.data, name, value, min_hour) == Field::Malformed {
                malformed += 1;
            }
        }
        if malformed > 0 {
            c.malformed_fields.fetch_add(malformed, Ordering::Relaxed);
            debug!(
                user_id = id,
                malformed, "profile replica: malformed fields skipped"
            );
        }
        match self.store.upsert(&mut self.data) {
            Ok(t) if t.segments > 0 || t.buckets > 0 => {
                self.store
                    .shared()
                    .counters
                    .truncated_profiles
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                self.store
                    .shared()
                    .counters
                    .malformed_profiles
                    .fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "profile replica: profile skipped");
            }
        }
    }

    /// One atomic read of the stream (gap check + next batch), applied. Waits briefly when idle.
    fn follow_once(&mut self, con: &mut redis::Connection) -> RResult<()> {
        let Some(last) = self.last_id else {
            return Ok(());
        };
        let read_at = now_ms();
        let t0 = Instant::now();
        let mut p = redis::pipe();
        p.atomic().ignore_errors();
        p.cmd("XINFO").arg("STREAM").arg(&self.stream);
        p.cmd("XREAD")
            .arg("COUNT")
            .arg(self.cfg.stream_batch)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(last.to_string());
        let replies: Vec<Value> = p.query(con)?;
        let read_wait = t0.elapsed();
        let (Some(info), Some(read)) = (replies.first(), replies.get(1)) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "MULTI reply without two results",
            )));
        };
        let info = parse_info(info)?;
        if let Some(why) = gap(&info, last, self.read_count) {
            warn!(last_id = %last, why, ?info,
                "profile replica: stream lost entries not yet applied; re-bootstrapping");
            self.last_id = None;
            return Ok(());
        }
        if let Value::ServerError(e) = read {
            return Err(redis::RedisError::from(e.clone()));
        }
        self.ids.clear();
        let mut newest = last;
        let mut n = 0usize;
        let mut entry_ms: Vec<u64> = Vec::new();
        // XREAD: [[stream, [[id, [field, value, …]], …]]] (or a RESP3 map), or nil.
        let streams = match read {
            Value::Map(m) => m.iter().map(|(_, v)| v).collect::<Vec<_>>(),
            Value::Array(a) => a
                .iter()
                .filter_map(|s| match s {
                    Value::Array(kv) if kv.len() == 2 => Some(&kv[1]),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let c = &self.store.shared().counters;
        for entries in streams {
            let Value::Array(entries) = entries else {
                continue;
            };
            for e in entries {
                let Value::Array(e) = e else { continue };
                let (Some(id), Some(fields)) = (e.first(), e.get(1)) else {
                    continue;
                };
                n += 1;
                let Some(id) = bytes_of(id).and_then(StreamId::parse) else {
                    continue;
                };
                newest = newest.max(id);
                entry_ms.push(id.ms);
                let user = pairs(fields).into_iter().find_map(|(k, v)| {
                    (bytes_of(k) == Some(keys::STREAM_FIELD.as_bytes())).then(|| bytes_of(v))?
                });
                match user {
                    Some(u) if !u.is_empty() => self.ids.push(u.to_vec()),
                    _ => {
                        c.malformed_profiles.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        c.stream_entries.fetch_add(n as u64, Ordering::Relaxed);
        self.read_count += n as u64;
        self.ids.sort_unstable();
        self.ids.dedup();
        self.fetch_wait = Duration::ZERO;
        self.fetch_and_apply(con)?;
        self.last_id = Some(newest);
        self.store.collect();
        let applied_ms = now_ms();
        let cycle = t0.elapsed();
        if cycle >= SLOW_CYCLE {
            // Where a slow cycle's time went: waiting for Redis (read, fetch) or applying.
            debug!(
                entries = n,
                profiles = self.ids.len(),
                cycle_ms = cycle.as_secs_f64() * 1e3,
                read_wait_ms = read_wait.as_secs_f64() * 1e3,
                fetch_wait_ms = self.fetch_wait.as_secs_f64() * 1e3,
                apply_ms = (cycle - read_wait - self.fetch_wait).as_secs_f64() * 1e3,
                "profile replica: slow replication cycle"
            );
        }
        if !entry_ms.is_empty() {
            let mut h = self.lag.lock().unwrap_or_else(|p| p.into_inner());
            for ms in &entry_ms {
                // Entry ids come from Redis's clock, the same host clock in these deployments.
                let _ = h.record(applied_ms.saturating_sub(*ms).min(LAG_MAX_MS));
            }
        }
        if n < self.cfg.stream_batch {
            // Everything Redis had at `read_at` is applied.
            self.store.mark_synced(read_at);
        }
        if n == 0 {
            let _: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(self.cfg.block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(newest.to_string())
                .query(con)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_and_order() {
        let a = StreamId::parse(b"1700000000000-5").expect("valid id");
        let b = StreamId::parse(b"1700000000001-0").expect("valid id");
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert!(StreamId::parse(b"17x-0").is_none());
        assert!(StreamId::parse(b"17").is_none());
    }

    #[test]
    fn gaps_are_detected_from_xinfo() {
        let id = |ms| StreamId { ms, seq: 0 };
        let info = StreamInfo {
            exists: true,
            last_generated: id(20),
            max_deleted: StreamId::default(),
            first_entry: id(11),
            entries_added: 20,
            length: 10,
        };
        // Read up to entry 10 (10 entries): entries 11..=20 all retained.
        assert_eq!(gap(&info, id(10), 10), None);
        // Read up to 5: entries 6..=10 were trimmed.
        assert!(gap(&info, id(5), 5).is_some());
        // Head behind us: nothing unread can be missing.
        assert_eq!(
            gap(
                &StreamInfo {
                    first_entry: id(3),
                    length: 18,
                    ..info
                },
                id(10),
                10
            ),
            None
        );
        // Trimmed to empty with unread entries, or without.
        let empty = StreamInfo {
            length: 0,
            first_entry: StreamId::default(),
            ..info
        };
        assert!(gap(&empty, id(10), 10).is_some());
        assert_eq!(gap(&empty, id(20), 20), None);
        assert!(
            gap(
                &StreamInfo {
                    max_deleted: id(12),
                    ..info
                },
                id(10),
                10
            )
            .is_some()
        );
        assert!(
            gap(
                &StreamInfo {
                    entries_added: 3,
                    ..info
                },
                id(10),
                10
            )
            .is_some()
        );
        assert!(gap(&StreamInfo::default(), id(10), 10).is_some());
        assert_eq!(gap(&StreamInfo::default(), StreamId::default(), 0), None);
    }

    #[test]
    fn start_rejects_bad_config_and_urls() {
        let cfg = ReplicaConfig {
            scan_batch: 0,
            ..Default::default()
        };
        assert!(matches!(start(&cfg), Err(StartError::Config(_))));
        for p in [0u8, 100] {
            let cfg = ReplicaConfig {
                follow_fifo_priority: Some(p),
                ..Default::default()
            };
            assert!(matches!(start(&cfg), Err(StartError::Config(_))), "{p}");
        }
        let cfg = ReplicaConfig {
            redis_url: "nope://x".into(),
            ..Default::default()
        };
        assert!(matches!(start(&cfg), Err(StartError::Url(_))));
    }
}

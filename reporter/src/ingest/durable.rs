//! The Kafka offsets of batches committed in PostgreSQL but perhaps not yet on its disk, held
//! back until they are. Owned by the writer task.
//!
//! With asynchronous commit (`SET LOCAL synchronous_commit = off`, `--pg-async-commit`),
//! PostgreSQL answers `COMMIT` before the commit record is flushed to the WAL on disk; a crash
//! of PostgreSQL in that window (at most ~3 × `wal_writer_delay`, 600 ms by default) loses the
//! transaction — its raw rows, rollup deltas and stored offsets together, never a part of it.
//! Exactly once then needs one more rule: **a batch's Kafka offsets are committed only once
//! PostgreSQL's WAL flush position has passed the batch's commit record** (the WAL insert
//! position read right after `COMMIT`). A lost transaction's offsets were therefore never
//! committed to Kafka: its messages are read again and stored (nothing lost); a durable one is
//! skipped on any replay by the event-id key (nothing counted twice).
//!
//! A crash restart of PostgreSQL reuses WAL positions past the end it recovered to, so a lost
//! commit's position may later read as flushed. Each batch therefore also carries the server's
//! start time at its commit; when a flush position comes from a server started since, the
//! waiting batches may be lost and [`Pending::release`] answers [`Restarted`]: the ingest then
//! starts over from the offsets committed to Kafka (all of them durable), re-reading those
//! batches (see [`super::consumer::run`]).
//!
//! Bounds: at most [`MAX_PENDING`] batches wait; the writer stops taking batches while that many
//! do (see [`Pending::full`]) — in practice one or two wait, the WAL writer flushes every
//! 200 ms. Must never: release offsets whose commit position is past the flush position.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::writer::Offsets;

/// PostgreSQL restarted while batches waited for the WAL flush: they may be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PostgreSQL restarted while {0} committed batches were not yet known to be on disk")]
pub struct Restarted(pub usize);

/// Most batches whose offsets may wait for the WAL flush.
pub const MAX_PENDING: usize = 64;

/// How long the oldest batch may wait before the writer forces a flush with a synchronous
/// commit of its own. The position read after a commit may lie a few bytes past the commit
/// record (alignment, the next page's header) and the WAL writer flushes only to the record:
/// without more WAL after it (the stream stopped) it would wait until something else writes.
pub const FORCE_FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Offsets per batch, in commit order, with the WAL position each needs flushed.
#[derive(Debug, Default)]
pub struct Pending {
    /// (commit position, server start time, offsets).
    queue: VecDeque<(u64, i64, Offsets)>,
    /// When the oldest waiting batch was pushed.
    oldest_since: Option<Instant>,
}

impl Pending {
    /// Holds `offsets` until a server started at `started` has flushed its WAL past
    /// `commit_lsn`.
    pub fn push(&mut self, commit_lsn: u64, started: i64, offsets: Offsets) {
        if self.queue.is_empty() {
            self.oldest_since = Some(Instant::now());
        }
        self.queue.push_back((commit_lsn, started, offsets));
    }

    /// Whether the oldest batch has waited longer than [`FORCE_FLUSH_AFTER`].
    pub fn overdue(&self) -> bool {
        self.oldest_since
            .is_some_and(|t| t.elapsed() >= FORCE_FLUSH_AFTER)
    }

    /// The offsets of every batch whose commit is at or before `flushed`, oldest first, given
    /// the flush position of a server started at `started`; [`Restarted`] if a waiting batch
    /// was committed on an earlier start (then nothing is released and the queue is emptied:
    /// those batches are to be read again).
    pub fn release(&mut self, flushed: u64, started: i64) -> Result<Vec<Offsets>, Restarted> {
        if self.queue.iter().any(|(_, s, _)| *s != started) {
            let n = self.queue.len();
            self.queue.clear();
            self.oldest_since = None;
            return Err(Restarted(n));
        }
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(l, _, _)| *l <= flushed) {
            if let Some((_, _, o)) = self.queue.pop_front() {
                out.push(o);
            }
        }
        if !out.is_empty() {
            // The new oldest batch is younger: its wait counts from now.
            self.oldest_since = (!self.queue.is_empty()).then(Instant::now);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The writer must make the oldest batches durable before it writes another.
    pub fn full(&self) -> bool {
        self.queue.len() >= MAX_PENDING
    }

    /// The offsets of the newest waiting batch.
    pub fn newest(&self) -> Option<&Offsets> {
        self.queue.back().map(|(_, _, o)| o)
    }

    /// The position the oldest waiting batch needs flushed.
    pub fn oldest(&self) -> Option<u64> {
        self.queue.front().map(|(l, _, _)| *l)
    }
}

/// A `pg_lsn` as text (`"16/B374D848"`) → its 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(n: i64) -> Offsets {
        vec![("t".to_owned(), 0, n)]
    }

    #[test]
    fn releases_only_what_the_flush_covers_in_order() {
        let mut p = Pending::default();
        p.push(100, 7, off(1));
        p.push(200, 7, off(2));
        p.push(300, 7, off(3));
        assert_eq!(p.release(99, 7), Ok(vec![]), "nothing flushed yet");
        assert_eq!(p.release(200, 7), Ok(vec![off(1), off(2)]));
        assert_eq!((p.len(), p.oldest()), (1, Some(300)));
        assert_eq!(p.release(299, 7), Ok(vec![]));
        assert_eq!(p.release(u64::MAX, 7), Ok(vec![off(3)]));
        assert!(p.is_empty());
    }

    #[test]
    fn a_restarted_server_releases_nothing_it_may_have_lost() {
        let mut p = Pending::default();
        p.push(100, 7, off(1));
        p.push(200, 7, off(2));
        // After a crash the new server's WAL reuses positions: 500 says nothing of 100 and 200.
        assert_eq!(p.release(500, 8), Err(Restarted(2)));
        assert!(p.is_empty(), "the uncertain batches are to be read again");
        p.push(600, 8, off(3));
        assert_eq!(p.release(600, 8), Ok(vec![off(3)]));
    }

    #[test]
    fn overdue_only_after_the_oldest_waited_long_enough() {
        let mut p = Pending::default();
        assert!(!p.overdue(), "nothing waits");
        p.push(1, 1, off(1));
        assert!(!p.overdue());
        std::thread::sleep(FORCE_FLUSH_AFTER + Duration::from_millis(20));
        assert!(p.overdue());
        assert_eq!(p.release(1, 1), Ok(vec![off(1)]));
        assert!(!p.overdue(), "emptied");
    }

    #[test]
    fn full_at_the_bound() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING as u64 {
            assert!(!p.full());
            p.push(i, 1, off(i as i64));
        }
        assert!(p.full());
        assert_eq!(p.release(0, 1).map(|v| v.len()), Ok(1));
        assert!(!p.full());
    }

    #[test]
    fn lsn_text_is_parsed_and_garbage_is_not() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }
}

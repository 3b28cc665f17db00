//! A batch made ready for PostgreSQL before its transaction opens: the rows outside the
//! retention window left out, the rest sorted by the raw key `(day, event_id)` with in-batch
//! repeats dropped, split into the writer's parts ([`super::writer::route`]), and per part the
//! binary `COPY` streams of its bids/no-bids and of its notices and its rollup deltas (folded in
//! memory, sorted by key, encoded) — everything the reporter computes for a batch, so that the
//! writer's transaction only sends bytes and waits for PostgreSQL.
//!
//! [`Ahead`] prepares the *next* batch on the blocking pool while the writer task writes the
//! current one (session 6): the reporter's CPU per event then overlaps PostgreSQL's instead of
//! adding to it. At most one batch is prepared ahead, and batches are written (and their offsets
//! committed) in the order they were read — the writer takes them from [`Ahead`] one at a time.
//! Memory: a prepared batch holds its rows and their encoded `COPY` bodies (about twice the
//! rows' size: ~30 MB for 50,000 events), so the ingest holds at most one such batch more than
//! before (the consumer's channel of 2 batches, the one prepared ahead, the one being written).
//!
//! The deltas are folded on the assumption that every row of the part will be inserted (the
//! usual case: only a replay or an exchange-repeated notice from an earlier batch is skipped);
//! when the raw insert skips rows, the writer folds the part again without them
//! ([`Deltas::of`]) — never adding to a rollup a row the raw insert skipped.
//!
//! Owned by whoever holds the [`Prepared`] (the blocking-pool thread while it is built, then the
//! writer task). Must never: reorder batches; hold more than one prepared batch ahead of the one
//! being written.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::task::JoinHandle;

use codec::event::EventKind;

use super::copy_bin::CopyBuf;
use super::fold::{Counters, DIM_TOTAL, Fold, RollupKey};
use super::partitions::Window;
use super::row::Row;
use super::writer::{Offsets, route};

/// Columns of the raw table in the order [`encode_row`] writes them.
pub(super) const RAW_FIELDS: i16 = 22;

/// Columns of a rollup delta in the order [`encode_deltas`] writes them.
pub(super) const DELTA_FIELDS: i16 = 16;

/// What preparing a batch needs from the writer (copied to the thread that prepares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareCfg {
    /// Days the raw table accepts now.
    pub window: Window,
    /// Parts (the writer's connections).
    pub parts: usize,
    /// Deltas of dim > 0 go to `rollup_pending` (see [`super::rollup_fold`]).
    pub defer_fine: bool,
}

/// A `COPY` body (binary format, header to trailer) in chunks of about
/// [`super::copy_bin::CHUNK_BYTES`], and how many rows it holds.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    pub chunks: Vec<Bytes>,
    pub rows: usize,
}

impl Encoded {
    /// The raw `COPY` body of `rows`, in their order (for a part's notices less the ones
    /// already stored: [`super::writer`]).
    pub(super) fn raw<'a>(rows: impl Iterator<Item = &'a Row>) -> Encoded {
        let mut b = CopyBuf::new(RAW_FIELDS);
        let mut e = Encoded::default();
        for r in rows {
            e.push_row(&mut b, r);
        }
        e.finish(b)
    }

    /// Encodes `r` into `b`, handing over each chunk `b` fills.
    fn push_row(&mut self, b: &mut CopyBuf, r: &Row) {
        encode_row(b, r);
        self.rows += 1;
        self.push_full(b);
    }

    fn finish(mut self, b: CopyBuf) -> Encoded {
        self.chunks.push(Bytes::from(b.finish().into_inner()));
        self
    }

    fn push_full(&mut self, b: &mut CopyBuf) {
        if let Some(c) = b.take_chunk() {
            self.chunks.push(Bytes::from(c.into_inner()));
        }
    }
}

/// The no-bid deltas as the columns of the writer's `unnest` upsert.
#[derive(Debug, Default)]
pub(super) struct NobidCols {
    pub grans: Vec<i16>,
    pub buckets: Vec<SystemTime>,
    pub exchanges: Vec<String>,
    pub reasons: Vec<i32>,
    pub counts: Vec<i64>,
}

/// One part's rollup deltas, encoded.
#[derive(Debug, Default)]
pub(super) struct Deltas {
    /// Upserted in the batch: the campaign totals (dim 0), or every family when not deferring.
    pub now: Encoded,
    /// Appended to `rollup_pending` (dim > 0, when deferring).
    pub later: Encoded,
    pub nobids: NobidCols,
}

impl Deltas {
    /// Folds `rows` (the rows stored) and encodes the deltas in key order.
    pub(super) fn of<'a>(
        rows: impl Iterator<Item = &'a Row>,
        capacity: usize,
        defer_fine: bool,
    ) -> Deltas {
        let mut fold = Fold::with_capacity(capacity);
        for r in rows {
            fold.add(r);
        }
        let deltas = fold.rollups();
        let (now, later): (Vec<_>, Vec<_>) = if defer_fine {
            deltas.into_iter().partition(|(k, _)| k.dim == DIM_TOTAL)
        } else {
            (deltas, Vec::new())
        };
        let nb = fold.nobids();
        Deltas {
            now: encode_deltas(&now),
            later: encode_deltas(&later),
            nobids: NobidCols {
                grans: nb.iter().map(|(k, _)| k.gran).collect(),
                buckets: nb.iter().map(|(k, _)| secs(k.bucket)).collect(),
                exchanges: nb.iter().map(|(k, _)| k.exchange.to_owned()).collect(),
                reasons: nb.iter().map(|(k, _)| k.reason).collect(),
                counts: nb.iter().map(|(_, n)| *n).collect(),
            },
        }
    }

    /// Rollup rows these deltas touch (no-bid rows included).
    pub(super) fn rows(&self) -> usize {
        self.now.rows + self.later.rows + self.nobids.counts.len()
    }
}

/// One part of a batch: the indexes of its rows (sorted by the raw key, without repeats) and
/// what the writer sends for them.
#[derive(Debug, Default)]
pub(super) struct Part {
    pub idx: Vec<u32>,
    /// The days its rows fall on (partitions to ensure), ascending.
    pub days: Vec<i32>,
    /// Bids and no-bids, raw columns.
    pub bids: Encoded,
    /// Notices (win, billing, loss, click), raw columns.
    pub notices: Encoded,
    /// Every row folded (assumed inserted).
    pub deltas: Deltas,
}

/// A batch cut into parts and encoded, for [`super::writer::Writer::write_plan`].
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub parts: Vec<Part>,
    pub out_of_range: u64,
    pub cfg: Option<PrepareCfg>,
}

impl Plan {
    /// Prepares `rows` as the module doc says.
    pub(super) fn of(rows: &[Row], cfg: PrepareCfg) -> Plan {
        let mut keep: Vec<u32> = (0..rows.len() as u32)
            .filter(|&i| cfg.window.contains(rows[i as usize].day))
            .collect();
        let out_of_range = (rows.len() - keep.len()) as u64;
        // Stable: among copies of one event id the first one read is kept.
        keep.sort_by_key(|&i| {
            let r = &rows[i as usize];
            (r.day, r.event_id)
        });
        keep.dedup_by(|b, a| {
            let (a, b) = (&rows[*a as usize], &rows[*b as usize]);
            a.day == b.day && a.event_id == b.event_id
        });
        let n = cfg.parts.max(1);
        let mut idx: Vec<Vec<u32>> = if n == 1 {
            vec![keep]
        } else {
            let mut v = vec![Vec::with_capacity(keep.len() / n + 1); n];
            for i in keep {
                v[route(&rows[i as usize], n)].push(i);
            }
            v
        };
        let parts = idx
            .drain(..)
            .map(|idx| Part::of(rows, idx, cfg.defer_fine))
            .collect();
        Plan {
            parts,
            out_of_range,
            cfg: Some(cfg),
        }
    }
}

impl Part {
    fn of(rows: &[Row], idx: Vec<u32>, defer_fine: bool) -> Part {
        let mut days: Vec<i32> = idx.iter().map(|&i| rows[i as usize].day).collect();
        days.dedup();
        let mut bids = (CopyBuf::new(RAW_FIELDS), Encoded::default());
        let mut notices = (CopyBuf::new(RAW_FIELDS), Encoded::default());
        for &i in &idx {
            let r = &rows[i as usize];
            let (b, e) = if is_bid_or_nobid(r) {
                (&mut bids.0, &mut bids.1)
            } else {
                (&mut notices.0, &mut notices.1)
            };
            e.push_row(b, r);
        }
        let deltas = Deltas::of(
            idx.iter().map(|&i| &rows[i as usize]),
            idx.len(),
            defer_fine,
        );
        Part {
            days,
            bids: bids.1.finish(bids.0),
            notices: notices.1.finish(notices.0),
            deltas,
            idx,
        }
    }
}

/// A batch read from Kafka, prepared: its rows, its offsets and its [`Plan`].
#[derive(Debug)]
pub struct Prepared {
    pub(super) rows: Vec<Row>,
    pub(super) offsets: Offsets,
    pub(super) plan: Plan,
    /// Time spent preparing it (on whichever thread did).
    pub prepare_time: Duration,
}

impl Prepared {
    pub fn new(rows: Vec<Row>, offsets: Offsets, cfg: PrepareCfg) -> Prepared {
        let t = Instant::now();
        let plan = Plan::of(&rows, cfg);
        Prepared {
            rows,
            offsets,
            plan,
            prepare_time: t.elapsed(),
        }
    }

    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rollup rows its deltas touch, over every part (no-bid rows included).
    pub fn delta_rows(&self) -> usize {
        self.plan.parts.iter().map(|p| p.deltas.rows()).sum()
    }
}

/// Prepares one batch ahead on the blocking pool (see the module doc): [`Ahead::start`] a batch,
/// write the one in hand, then [`Ahead::ready`] for the next. Owned by the writer task.
#[derive(Debug, Default)]
pub struct Ahead {
    preparing: Option<JoinHandle<Prepared>>,
}

impl Ahead {
    /// A batch is being prepared (or is prepared and not yet taken).
    pub fn is_busy(&self) -> bool {
        self.preparing.is_some()
    }

    /// Starts preparing a batch. Only one at a time: the caller takes the previous one with
    /// [`Ahead::ready`] first (checked in debug builds; in release the earlier one is awaited
    /// by nobody and dropped — never happens in the writer task, which checks
    /// [`Ahead::is_busy`]).
    pub fn start(&mut self, rows: Vec<Row>, offsets: Offsets, cfg: PrepareCfg) {
        debug_assert!(self.preparing.is_none(), "one batch ahead at most");
        self.preparing = Some(tokio::task::spawn_blocking(move || {
            Prepared::new(rows, offsets, cfg)
        }));
    }

    /// The batch being prepared, once it is. Cancel-safe (in a `select!`): if dropped before it
    /// completes, the batch stays in preparation and a later call answers it.
    pub async fn ready(&mut self) -> Result<Prepared> {
        let h = self
            .preparing
            .as_mut()
            .context("no batch is being prepared")?;
        let r = h.await;
        self.preparing = None;
        r.context("preparing a batch (the task panicked or was cancelled)")
    }
}

/// One raw row in the column order of the writer's `COPY` statements.
fn encode_row(b: &mut CopyBuf, r: &Row) {
    b.start_row();
    b.i32(r.day);
    b.bytes(&r.event_id);
    b.i16(r.kind);
    b.i16(r.flags);
    b.i32(r.reason);
    b.i32(r.core);
    b.ts(r.ts);
    b.ts_opt(r.bid_ts);
    b.bytes(&r.trace_id);
    b.text(r.node());
    b.text(r.exchange());
    b.text(r.request_id());
    b.text(r.imp_id());
    b.i64(r.advertiser_id);
    b.i64(r.campaign_id);
    b.i64(r.creative_id);
    b.i64(r.bid_price_micros);
    b.i64(r.clear_price_micros);
    b.text(r.currency());
    b.text(r.country());
    b.i16(r.device_type);
    b.text(r.site_or_app());
    b.end_row();
}

/// Rollup deltas (in key order) in the column order of the writer's delta `COPY` statements.
fn encode_deltas(deltas: &[(&RollupKey<'_>, &Counters)]) -> Encoded {
    let mut out = Encoded::default();
    if deltas.is_empty() {
        return out;
    }
    let mut b = CopyBuf::new(DELTA_FIELDS);
    let mut val = String::new();
    for (k, c) in deltas {
        b.start_row();
        b.i16(k.gran);
        b.i64(k.advertiser_id);
        b.i64(k.campaign_id);
        b.i16(k.dim);
        b.ts(secs(k.bucket));
        val.clear();
        k.val.render_into(&mut val);
        b.text(&val);
        b.i64(c.bids);
        b.i64(c.nobids);
        b.i64(c.wins);
        b.i64(c.losses);
        b.i64(c.impressions);
        b.i64(c.clicks);
        b.i64(c.bid_cpm_micros);
        b.i64(c.win_cpm_micros);
        b.i64(c.spend_cpm_micros);
        b.ts(UNIX_EPOCH + Duration::from_nanos(c.last_ts_ns));
        b.end_row();
        out.rows += 1;
        out.push_full(&mut b);
    }
    out.finish(b)
}

fn secs(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)
}

/// Bids and no-bids carry ids the appliance minted once (see
/// [`super::writer::InsertPlan::CopyBids`]).
pub(super) fn is_bid_or_nobid(r: &Row) -> bool {
    r.kind == EventKind::Bid as u8 as i16 || r.kind == EventKind::NoBid as u8 as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{RunConfig, generate};

    fn rows(n: u64) -> Vec<Row> {
        let now = crate::day::today() as u64 * 86_400 * 1_000_000_000;
        let cfg = RunConfig::small(5, n, now, 3_600_000_000_000);
        generate(&cfg).iter().map(Row::from_event).collect()
    }

    fn cfg(parts: usize, defer_fine: bool) -> PrepareCfg {
        PrepareCfg {
            window: Window::new(crate::day::today(), 30),
            parts,
            defer_fine,
        }
    }

    #[test]
    fn parts_hold_each_distinct_event_once_sorted_and_routed() {
        let rows = rows(3000);
        let distinct: std::collections::HashSet<_> =
            rows.iter().map(|r| (r.day, r.event_id)).collect();
        for n in [1, 3] {
            let p = Prepared::new(rows.clone(), Offsets::new(), cfg(n, true));
            assert_eq!(p.plan.parts.len(), n);
            let mut seen = 0;
            for (k, part) in p.plan.parts.iter().enumerate() {
                let keys: Vec<_> = part
                    .idx
                    .iter()
                    .map(|&i| (rows[i as usize].day, rows[i as usize].event_id))
                    .collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
                assert!(part.idx.iter().all(|&i| route(&rows[i as usize], n) == k));
                assert_eq!(part.bids.rows + part.notices.rows, part.idx.len());
                seen += part.idx.len();
            }
            assert_eq!(seen, distinct.len());
        }
    }

    #[test]
    fn deltas_are_the_fold_of_the_part_split_by_deferral() {
        let rows = rows(2000);
        let p = Prepared::new(rows.clone(), Offsets::new(), cfg(1, true));
        let part = &p.plan.parts[0];
        let mut fold = Fold::with_capacity(part.idx.len());
        for &i in &part.idx {
            fold.add(&rows[i as usize]);
        }
        let all = fold.rollups();
        let totals = all.iter().filter(|(k, _)| k.dim == DIM_TOTAL).count();
        assert!(totals > 0 && totals < all.len());
        assert_eq!(part.deltas.now.rows, totals);
        assert_eq!(part.deltas.later.rows, all.len() - totals);
        assert_eq!(part.deltas.nobids.counts.len(), fold.nobid_len());
        assert_eq!(
            part.deltas.nobids.counts.iter().sum::<i64>(),
            fold.nobids().iter().map(|(_, n)| n).sum::<i64>()
        );
        // Not deferring: every family upserted in the batch.
        let q = Prepared::new(rows.clone(), Offsets::new(), cfg(1, false));
        assert_eq!(q.plan.parts[0].deltas.now.rows, all.len());
        assert_eq!(q.plan.parts[0].deltas.later.rows, 0);
    }

    #[test]
    fn rows_outside_the_window_are_counted_not_prepared() {
        let mut rows = rows(500);
        let n = rows.len();
        rows[0].day -= 400;
        rows[1].day += 400;
        let p = Prepared::new(rows, Offsets::new(), cfg(1, true));
        assert_eq!(p.plan.out_of_range, 2);
        assert!(p.plan.parts[0].idx.len() < n - 1);
        assert!(p.plan.parts[0].idx.iter().all(|&i| i > 1));
    }

    #[tokio::test]
    async fn ahead_answers_the_batch_it_started() {
        let rows = rows(300);
        let mut a = Ahead::default();
        assert!(!a.is_busy());
        assert!(a.ready().await.is_err(), "nothing started");
        let offsets = vec![("t".to_owned(), 0, 42)];
        a.start(rows.clone(), offsets.clone(), cfg(1, true));
        assert!(a.is_busy());
        let p = a.ready().await.expect("prepared");
        assert!(!a.is_busy());
        assert_eq!(p.rows, rows);
        assert_eq!(p.offsets(), &offsets);
    }
}

-- The two API shapes that still read one heap page per rollup row (EXPLAIN on 107 M events'
-- worth of rollups: the rows of one campaign are spread over the table in insertion order):
-- the per-minute campaign series (`/stats?granularity=minute`, 1,440 rows for 24 h: ~1,400
-- heap pages) and the per-site hourly rows (`/stats?group_by=site`, `/sites`: ~14,000 rows for
-- 30 days, ~1,100 pages). Covering partial indexes make both index-only scans of contiguous
-- pages, like `rollups_totals` (migration 0004) does for hour and day totals.
--
-- Ingest cost: a rollup row whose counters are in an index is no longer HOT-updated. Minute rows
-- are campaign totals only (one row per campaign and minute: a live batch of 250 ms updates a
-- few hundred), so that index costs the ingest next to nothing. Per-site hour rows are many
-- (up to one per campaign × site × hour); each batch that updates one now also inserts index
-- entries for it — measured side by side in bench/RESULTS.md ("Reporter", session 3).
CREATE INDEX IF NOT EXISTS rollups_minutes ON rollups (advertiser_id, campaign_id, bucket)
    INCLUDE (val, bids, nobids, wins, losses, impressions, clicks, bid_cpm_micros, spend_cpm_micros)
    WHERE gran = 1 AND dim = 0;
CREATE INDEX IF NOT EXISTS rollups_sites ON rollups (advertiser_id, campaign_id, bucket)
    INCLUDE (val, bids, nobids, wins, losses, impressions, clicks, bid_cpm_micros, spend_cpm_micros)
    WHERE gran = 2 AND dim = 2;

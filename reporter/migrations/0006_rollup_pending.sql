-- Fine-grained rollup deltas out of the batch path (issue 8, session 5).
--
-- The hour rows per creative, site/app, country and device type (dim > 0) were upserted in every
-- batch transaction: ~0.35 upserts per event in a dense stream (a per-site hour row is about one
-- row per bid request), ~40 % of PostgreSQL's time per event. The ingest now appends their
-- deltas, unaggregated across batches, to this unindexed table in the batch transaction (a heap
-- append: no index, no conflict check, no update), and a folder
-- (reporter/src/ingest/rollup_fold.rs) moves them into `rollups` every few seconds in a
-- transaction of its own: `DELETE … RETURNING` → `GROUP BY` → one upsert per distinct key.
-- Exactly once holds because both moves are transactional: a delta is either here or folded
-- into `rollups`, never both and never neither (the delete and the upsert commit together).
--
-- Readers sum `rollups_all` (folded + not yet folded) for dim > 0: every API query of those
-- families aggregates (`GROUP BY`), so a key that is half folded adds up. Campaign totals
-- (dim = 0: minute, hour and day series, the campaign list, pacing) stay in the batch path and
-- never appear here (the CHECK below).
CREATE TABLE IF NOT EXISTS rollup_pending (
    gran              smallint    NOT NULL,
    advertiser_id     bigint      NOT NULL,
    campaign_id       bigint      NOT NULL,
    dim               smallint    NOT NULL CHECK (dim <> 0),
    bucket            timestamptz NOT NULL,
    val               text        NOT NULL,
    bids              bigint      NOT NULL,
    nobids            bigint      NOT NULL,
    wins              bigint      NOT NULL,
    losses            bigint      NOT NULL,
    impressions       bigint      NOT NULL,
    clicks            bigint      NOT NULL,
    bid_cpm_micros    bigint      NOT NULL,
    win_cpm_micros    bigint      NOT NULL,
    spend_cpm_micros  bigint      NOT NULL,
    last_ts           timestamptz NOT NULL
) WITH (
    -- Emptied every few seconds: vacuum it often, by row count, so its pages are reused
    -- instead of the table growing (the default 20 % of a table that is ~empty after each fold
    -- would leave that to chance).
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 50000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 200000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 50000
);

CREATE OR REPLACE VIEW rollups_all AS
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollups
    UNION ALL
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollup_pending;

-- Rollups split in two partitions by dimension (issue 8, session 8), so that the fine-grained
-- rows can be HOT-updated again.
--
-- PostgreSQL 15 updates a row in place (HOT: heap-only tuple, no new index entries) only when
-- no column that any index of the table mentions changes — key, INCLUDE and predicate columns
-- alike, whatever the index's WHERE says about the row. The covering indexes of migrations 0004
-- and 0005 INCLUDE the counters for the campaign totals (dim = 0); being indexes of the whole
-- table, they made every update of every rollup row non-HOT, the per-creative/site/country/
-- device hour rows (dim > 0) included, which their comments assumed were not affected. Measured
-- on 400,000 hour-per-site rows (bench/RESULTS.md, "Reporter", session 8): a fold updating each
-- once had 0 HOT updates, each a new heap tuple plus a new primary-key entry.
--
-- `rollups` is now partitioned by LIST (dim): `rollups_campaign` holds the campaign totals and
-- the indexes that serve their series (the covering ones, their `dim = 0` now the partition's
-- bound; those rows stay non-HOT, their counters being indexed), `rollups_detail` every
-- other dimension with only its share of the primary key — so its counters are in no index and
-- its updates are HOT whenever the page has room (fillfactor 70). Queries, upserts and the
-- `rollups_all` view name `rollups` as before; PostgreSQL routes rows and prunes partitions by
-- `dim` (every API query names it). The primary key is the same and includes `dim`, the
-- partition key, as a partitioned table's unique key must.
--
-- Cost when applied to a database with data: the rows are copied into the new table and every
-- index is built again, under an exclusive lock (the ingest and the API wait for it: ~24 s for
-- the 4.9 million rows, 1.7 GB, of 107 million events' worth of rollups on the 2-core dev
-- machine). On a large deployment run `helios-reporter migrate` in a quiet moment first, then
-- `VACUUM (ANALYZE) rollups`: the new partitions' visibility maps are empty until vacuumed, and
-- until then the campaign totals' index-only scans read heap pages (autovacuum gets there on
-- its own soon after).
DROP VIEW IF EXISTS rollups_all;

ALTER TABLE rollups RENAME TO rollups_unsplit;
ALTER INDEX rollups_pkey RENAME TO rollups_unsplit_pkey;

-- The same columns as before — types, NOT NULLs and `val`'s COLLATE "C" (0008) — taken from the
-- table itself; the key is added on the partitioned table (it includes `dim`, the partition key,
-- as a partitioned table's unique key must).
CREATE TABLE rollups (LIKE rollups_unsplit) PARTITION BY LIST (dim);
ALTER TABLE rollups ADD PRIMARY KEY (gran, advertiser_id, campaign_id, dim, bucket, val);

-- Autovacuum as migration 0004 set it for the whole table (2 % of the rows, so that index-only
-- scans find the visibility map set); room on each page for HOT updates as in 0001.
CREATE TABLE rollups_campaign PARTITION OF rollups FOR VALUES IN (0) WITH (
    fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE TABLE rollups_detail PARTITION OF rollups DEFAULT WITH (
    fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

INSERT INTO rollups SELECT * FROM rollups_unsplit;
DROP TABLE rollups_unsplit;

-- The indexes of migrations 0002, 0004 and 0005, on the campaign totals' partition only (their
-- `dim = 0` is now the partition's bound).
CREATE INDEX rollups_campaign_days ON rollups_campaign (campaign_id, advertiser_id) WHERE gran = 3;
CREATE INDEX rollups_totals ON rollups_campaign (advertiser_id, campaign_id, gran, bucket)
    INCLUDE (bids, nobids, wins, losses, impressions, clicks, bid_cpm_micros, win_cpm_micros,
             spend_cpm_micros, last_ts)
    WHERE gran >= 2;
CREATE INDEX rollups_minutes ON rollups_campaign (advertiser_id, campaign_id, bucket)
    INCLUDE (val, bids, nobids, wins, losses, impressions, clicks, bid_cpm_micros, spend_cpm_micros)
    WHERE gran = 1;

CREATE VIEW rollups_all AS
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollups
    UNION ALL
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollup_pending;

ANALYZE rollups;

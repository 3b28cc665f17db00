-- The text columns of the rollup keys compare bytewise (issue 8, session 7). They were created
-- with the database's default collation — C.UTF-8 as `scripts/services.sh` initialises the
-- cluster, anything the operator chose elsewhere — and PostgreSQL 15 treats only "C" and "POSIX"
-- as bytewise: every other libc collation compares through strcoll() (and sorts without
-- abbreviated keys). Every rollup upsert probes the primary key (gran, advertiser_id,
-- campaign_id, dim, bucket, val), and every fold sorts and groups its deltas by it. Measured on
-- 400,000 hour-per-site keys (bench/RESULTS.md, "Reporter", session 7): inserts of new keys
-- 15–18 %, updates of existing ones 3–7 % and the fold's sort 14–24 % cheaper with COLLATE "C".
-- The values are site/app names, ISO country codes, device types, creative ids and exchange
-- names: the keys need equality only; the API orders by figures and breaks ties by name, which
-- is now bytewise (what C.UTF-8 gave for ASCII).
-- `rollups_all` reads `val`, so it is dropped and made again around the change; the indexes
-- that hold `val` are rebuilt by PostgreSQL (no table rewrite: same type, binary-coercible).
DROP VIEW IF EXISTS rollups_all;

ALTER TABLE rollups ALTER COLUMN val TYPE text COLLATE "C";
ALTER TABLE rollup_pending ALTER COLUMN val TYPE text COLLATE "C";
ALTER TABLE nobid_rollups ALTER COLUMN exchange TYPE text COLLATE "C";

CREATE VIEW rollups_all AS
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollups
    UNION ALL
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses,
           impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts
    FROM rollup_pending;

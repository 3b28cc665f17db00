-- The text columns of the rollup keys compare bytewise (issue 8, session 7). They were created
-- with the database's default collation — whatever locale the cluster was initialised with
-- (`scripts/services.sh` runs initdb in the caller's locale: C.UTF-8 on this project's dev and
-- CI machines) — and PostgreSQL 15 treats only "C" and "POSIX" as bytewise: every other libc
-- collation compares through strcoll() (and sorts without abbreviated keys). Every rollup upsert probes the primary key (gran, advertiser_id,
-- campaign_id, dim, bucket, val), and every fold sorts and groups its deltas by it. Measured on
-- 400,000 hour-per-site keys (bench/RESULTS.md, "Reporter", session 7): inserts of new keys
-- 15–18 %, updates of existing ones 3–7 % and the fold's sort 14–24 % cheaper with COLLATE "C".
-- The values are site/app names, ISO country codes, device types, creative ids and exchange
-- names: the keys need equality only; the API orders by figures and breaks ties by name, which
-- is now bytewise (what C.UTF-8 gave for ASCII; a cluster in, say, en_US.UTF-8 sees those
-- tie-breaks and the no-bid reasons' exchange order change to byte order).
-- Cost when applied to a database with data: each ALTER takes an exclusive lock on its table
-- and rebuilds its indexes that hold the column (the primary key; `rollups_minutes`), so the
-- ingest and the API wait for it once, for as long as the rebuild takes (0.56 s for 400,000
-- rows on the 2-core dev machine). On a large deployment run `helios-reporter migrate` in a
-- quiet moment first.
-- The planner's statistics of the changed columns are dropped by the ALTER; ANALYZE makes them
-- again.
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

ANALYZE rollups, rollup_pending, nobid_rollups;

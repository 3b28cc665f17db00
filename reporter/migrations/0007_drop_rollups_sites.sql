-- The per-site covering index of migration 0005 goes (issue 8, session 5). Measured
-- (bench/RESULTS.md, "Reporter", session 5): it cost the fold of the deferred rollups
-- 0.4–0.55 µs of PostgreSQL CPU per ingested event (a per-site hour row whose counters are in
-- an index is never HOT-updated, and every new one adds an index entry), and the batch path
-- 0.85 µs when not deferred; without it the API's 30-day per-site series (`/stats?group_by=site`,
-- 107 M events' worth of rollups) answered at p95 28.8 ms against 28.5 ms with it, warm (and
-- 67 ms against 43–47 ms in session 3, colder) — well inside the 100 ms goal. The per-site rows
-- are then read through the primary key (gran, advertiser_id, campaign_id, dim, bucket, val),
-- whose prefix the query fixes.
DROP INDEX IF EXISTS rollups_sites;

-- A sum of bigints that stays a bigint, for the rollup fold (issue 8, session 9).
--
-- PostgreSQL's `sum(bigint)` answers `numeric`: each group's state is an allocated 128-bit
-- accumulator, turned into a `numeric` at the end, which the fold then cast back to `bigint`.
-- Folding 370,000 pending deltas (9 sums each) that way took twice the CPU of the same
-- `GROUP BY` with this aggregate, and the states' memory (266 MB) spilled the hash table to
-- disk at the folder's 128 MB `work_mem` (bench/RESULTS.md, "Reporter", session 9). Here the
-- state is the `bigint` itself, passed by value; `int8pl` is the `+` of two bigints, so an
-- overflow fails the fold ("bigint out of range") as the cast did — the deltas then stay
-- pending, nothing is lost or wrapped. Strict, with no initial value: the group's first value
-- starts the sum (the columns summed are NOT NULL; an empty group does not exist).
CREATE AGGREGATE helios_sum_bigint (bigint) (
    SFUNC = int8pl,
    STYPE = bigint,
    COMBINEFUNC = int8pl,
    PARALLEL = SAFE
);

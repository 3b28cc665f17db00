-- Raw events, one row per event id, partitioned by day (days since the Unix epoch, UTC).
-- `day` comes from the bid time when the event has one (outcomes carry it from the signed notice)
-- and from the event time otherwise, so a repeated notice lands in the same partition as the
-- first and collides on the primary key. Partitions are created by the ingest and dropped by
-- retention (see reporter/src/ingest/partitions.rs).
CREATE TABLE events (
    day                integer     NOT NULL,
    event_id           bytea       NOT NULL,
    kind               smallint    NOT NULL,
    flags              smallint    NOT NULL,
    reason             integer     NOT NULL,
    core               integer     NOT NULL,
    ts                 timestamptz NOT NULL,
    bid_ts             timestamptz,
    trace_id           bytea       NOT NULL,
    node               text        NOT NULL,
    exchange           text        NOT NULL,
    request_id         text        NOT NULL,
    imp_id             text        NOT NULL,
    advertiser_id      bigint      NOT NULL,
    campaign_id        bigint      NOT NULL,
    creative_id        bigint      NOT NULL,
    bid_price_micros   bigint      NOT NULL,
    clear_price_micros bigint      NOT NULL,
    currency           text        NOT NULL,
    country            text        NOT NULL,
    device_type        smallint    NOT NULL,
    site_or_app        text        NOT NULL,
    PRIMARY KEY (day, event_id)
) PARTITION BY RANGE (day);

-- Rollups per granularity (1 minute, 2 hour, 3 day) and dimension (0 campaign total,
-- 1 creative, 2 site/app, 3 country, 4 device type); `val` is the dimension's value ('' for 0).
-- Money: sums of CPM prices in micros (exact); spend in micros is spend_cpm_micros / 1000.
CREATE TABLE rollups (
    gran              smallint    NOT NULL,
    advertiser_id     bigint      NOT NULL,
    campaign_id       bigint      NOT NULL,
    dim               smallint    NOT NULL,
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
    last_ts           timestamptz NOT NULL,
    PRIMARY KEY (gran, advertiser_id, campaign_id, dim, bucket, val)
) WITH (fillfactor = 70); -- room on each page for HOT updates (every batch updates rows in place)

-- No-bids by reason and exchange (operators only).
CREATE TABLE nobid_rollups (
    gran     smallint    NOT NULL,
    bucket   timestamptz NOT NULL,
    exchange text        NOT NULL,
    reason   integer     NOT NULL,
    nobids   bigint      NOT NULL,
    PRIMARY KEY (gran, bucket, exchange, reason)
) WITH (fillfactor = 70);

-- What the reporter knows of advertisers and campaigns besides the events (names, budgets,
-- flight dates). Issue 9 (campaign management) writes here; the reporter only reads.
CREATE TABLE advertisers (
    advertiser_id bigint PRIMARY KEY,
    name          text   NOT NULL
);

CREATE TABLE campaigns (
    campaign_id   bigint PRIMARY KEY,
    advertiser_id bigint NOT NULL,
    name          text   NOT NULL,
    status        text   NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'archived')),
    budget_micros bigint CHECK (budget_micros >= 0),
    start_at      timestamptz,
    end_at        timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (end_at IS NULL OR start_at IS NULL OR end_at > start_at)
);
CREATE INDEX campaigns_by_advertiser ON campaigns (advertiser_id);

-- Next offset to read per partition, written in the same transaction as the rows it covers
-- (for observability and lag; exactly-once itself rests on the event-id primary key).
CREATE TABLE ingest_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

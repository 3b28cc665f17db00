-- Campaign management (the control-plane store). The bidder's campaign set is built from these
-- tables on every accepted change and published to Redis (reporter/src/api/manage.rs).
-- `spec` is one campaign in the campaigns-file format of docs/CAMPAIGNS.md (creatives and
-- budgets included), exactly as the bidder parses it; the columns beside it are copies for
-- queries. Every change writes a row to cm_campaign_versions and to cm_audit.

CREATE TABLE cm_advertisers (
    advertiser_id      bigint      PRIMARY KEY CHECK (advertiser_id > 0 AND advertiser_id <= 4294967295),
    name               text        NOT NULL,
    utc_offset_minutes integer     NOT NULL DEFAULT 0 CHECK (utc_offset_minutes BETWEEN -840 AND 840),
    version            bigint      NOT NULL DEFAULT 1,
    updated_by         text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cm_campaigns (
    campaign_id         bigint      PRIMARY KEY CHECK (campaign_id > 0 AND campaign_id <= 4294967295),
    advertiser_id       bigint      NOT NULL REFERENCES cm_advertisers (advertiser_id),
    status              text        NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
    total_budget_micros bigint      NOT NULL CHECK (total_budget_micros >= 0),
    daily_budget_micros bigint,
    spec                jsonb       NOT NULL,
    version             bigint      NOT NULL,
    updated_by          text        NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cm_campaigns_by_advertiser ON cm_campaigns (advertiser_id);

-- Every version of every campaign (version 1 = created).
CREATE TABLE cm_campaign_versions (
    campaign_id bigint      NOT NULL,
    version     bigint      NOT NULL,
    spec        jsonb       NOT NULL,
    set_version bigint      NOT NULL,
    changed_by  text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, version)
);

-- What an operator reads: who did what, when, and which campaign-set version it produced.
CREATE TABLE cm_audit (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text        NOT NULL,
    role          text        NOT NULL,
    action        text        NOT NULL,
    advertiser_id bigint,
    campaign_id   bigint,
    set_version   bigint,
    detail        jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX cm_audit_by_campaign ON cm_audit (campaign_id, id);

-- The campaign set: one row. `version` increases by one per accepted change (taken under this
-- row's lock, so changes are serialised); `set_json` is the set as published.
CREATE TABLE cm_set (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    version     bigint      NOT NULL,
    set_json    text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO cm_set (version, set_json) VALUES (0, '{"version":0}');

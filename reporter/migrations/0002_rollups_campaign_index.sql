-- Who owns a campaign, and which campaigns exist, without scanning the day rollups of every
-- dimension: the rollups' key starts with the advertiser, but these lookups start from the
-- campaign (measured: ~80 ms per API call over 30 days of 200 campaigns without it).
CREATE INDEX rollups_campaign_days ON rollups (campaign_id, advertiser_id) WHERE gran = 3 AND dim = 0;

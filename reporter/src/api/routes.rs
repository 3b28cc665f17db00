//! The `/api/v1` handlers. Each takes the [`Caller`] first (no token, no data) and passes the
//! caller's advertiser filter into the SQL itself, so a forgotten check cannot leak rows.
//! Every response is bounded: time ranges ≤ [`MAX_RANGE_SECS`], ≤ [`MAX_BUCKETS`] buckets per
//! series, ≤ [`MAX_GROUPS`] series, ≤ [`MAX_ITEMS`] list items.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use codec::event::NoBidReason;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Row as PgRow;

use super::AppState;
use super::auth::{Caller, Scope, now_secs};
use super::error::{ApiError, ApiResult};
use super::openapi;
use crate::ingest::fold;

pub const MAX_RANGE_SECS: i64 = 400 * 86_400;
pub const MAX_BUCKETS: i64 = 5_000;
pub const MAX_GROUPS: i64 = 50;
pub const MAX_ITEMS: i64 = 1_000;

/// Every route, for the router and for the test that the OpenAPI document lists them all.
pub const ROUTES: &[&str] = &[
    "/api/v1/openapi.json",
    "/api/v1/me",
    "/api/v1/advertisers",
    "/api/v1/advertisers/{advertiser_id}",
    "/api/v1/campaigns",
    "/api/v1/campaigns/{campaign_id}",
    "/api/v1/campaigns/{campaign_id}/pacing",
    "/api/v1/stats",
    "/api/v1/top-sites",
    "/api/v1/nobid-reasons",
    "/api/v1/ingest",
    "/healthz",
    "/metrics",
];

pub fn api_router() -> Router<AppState> {
    Router::new()
        .route(ROUTES[0], get(openapi_doc))
        .route(ROUTES[1], get(me))
        .route(ROUTES[2], get(advertisers))
        .route(ROUTES[3], get(advertiser))
        .route(ROUTES[4], get(campaigns))
        .route(ROUTES[5], get(campaign))
        .route(ROUTES[6], get(pacing))
        .route(ROUTES[7], get(stats))
        .route(ROUTES[8], get(top_sites))
        .route(ROUTES[9], get(nobid_reasons))
        .route(ROUTES[10], get(ingest))
        .route(ROUTES[11], get(healthz))
        .route(ROUTES[12], get(metrics))
        .fallback(not_found)
}

// ---------------------------------------------------------------- extractors with JSON errors

/// `Query<T>` whose rejection is a JSON 400.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, s)
            .await
            .map(|q| Q(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// `Path<T>` whose rejection is a JSON 400.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| P(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/v1/openapi.json".into())
}

// ---------------------------------------------------------------- figures

/// Summed counters of a set of rollup rows, and what derives from them. Money in micros.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Figures {
    pub bids: i64,
    pub nobids: i64,
    pub wins: i64,
    pub losses: i64,
    pub impressions: i64,
    pub clicks: i64,
    /// Spend in micros: Σ clearing CPM / 1000.
    pub spend_micros: i64,
    /// wins / bids (null without bids).
    pub win_rate: Option<f64>,
    /// Effective CPM in micros: Σ clearing CPM / impressions (null without impressions).
    pub ecpm_micros: Option<i64>,
    /// clicks / impressions.
    pub ctr: Option<f64>,
    /// Average bid CPM in micros.
    pub avg_bid_cpm_micros: Option<i64>,
    /// The sums the figures derive from (for totals over points; not serialised).
    #[serde(skip)]
    pub sums: [i64; 8],
}

/// The summed columns, in the order [`Figures::from_row`] reads them.
const SUMS: &str = "coalesce(sum(bids), 0)::bigint, coalesce(sum(nobids), 0)::bigint, \
    coalesce(sum(wins), 0)::bigint, coalesce(sum(losses), 0)::bigint, \
    coalesce(sum(impressions), 0)::bigint, coalesce(sum(clicks), 0)::bigint, \
    coalesce(sum(bid_cpm_micros), 0)::bigint, coalesce(sum(spend_cpm_micros), 0)::bigint";

impl Figures {
    pub fn from_sums(c: [i64; 8]) -> Figures {
        let [
            bids,
            nobids,
            wins,
            losses,
            impressions,
            clicks,
            bid_cpm,
            spend_cpm,
        ] = c;
        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
        Figures {
            bids,
            nobids,
            wins,
            losses,
            impressions,
            clicks,
            spend_micros: spend_cpm / 1000,
            win_rate: ratio(wins, bids),
            ecpm_micros: (impressions > 0).then(|| spend_cpm / impressions),
            ctr: ratio(clicks, impressions),
            avg_bid_cpm_micros: (bids > 0).then(|| bid_cpm / bids),
            sums: c,
        }
    }
    fn from_row(r: &PgRow, at: usize) -> Figures {
        let mut c = [0i64; 8];
        for (i, v) in c.iter_mut().enumerate() {
            *v = r.get(at + i);
        }
        Figures::from_sums(c)
    }
}

// ---------------------------------------------------------------- parameters

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    fn code(self) -> i16 {
        match self {
            Granularity::Minute => 1,
            Granularity::Hour => 2,
            Granularity::Day => 3,
        }
    }
    pub fn secs(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }
    /// The finest granularity that keeps a range within [`MAX_BUCKETS`] and readable.
    pub fn auto(span: i64) -> Granularity {
        if span <= 6 * 3600 {
            Granularity::Minute
        } else if span <= 31 * 86_400 {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    None,
    Advertiser,
    Campaign,
    Creative,
    Site,
    Country,
    Device,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::None => "none",
            GroupBy::Advertiser => "advertiser",
            GroupBy::Campaign => "campaign",
            GroupBy::Creative => "creative",
            GroupBy::Site => "site",
            GroupBy::Country => "country",
            GroupBy::Device => "device",
        }
    }

    /// (rollup dimension, SQL expression of the group key). Expressions are constants.
    fn dim_key(self) -> (i16, &'static str) {
        match self {
            GroupBy::None => (0, "''"),
            GroupBy::Advertiser => (0, "advertiser_id::text"),
            GroupBy::Campaign => (0, "campaign_id::text"),
            GroupBy::Creative => (1, "val"),
            GroupBy::Site => (2, "val"),
            GroupBy::Country => (3, "val"),
            GroupBy::Device => (4, "val"),
        }
    }
}

/// A validated `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    /// `to` defaults to now, `from` to `to - default_span`.
    pub fn parse(from: Option<i64>, to: Option<i64>, default_span: i64) -> ApiResult<Range> {
        let to = to.unwrap_or_else(|| now_secs() as i64);
        let from = from.unwrap_or(to - default_span);
        if from < 0 || to <= from {
            return Err(ApiError::BadRequest(
                "`from` and `to` are Unix seconds with 0 ≤ from < to".into(),
            ));
        }
        if to - from > MAX_RANGE_SECS {
            return Err(ApiError::BadRequest(format!(
                "range longer than {} days",
                MAX_RANGE_SECS / 86_400
            )));
        }
        Ok(Range { from, to })
    }
    fn times(self) -> (std::time::SystemTime, std::time::SystemTime) {
        (
            UNIX_EPOCH + Duration::from_secs(self.from as u64),
            UNIX_EPOCH + Duration::from_secs(self.to as u64),
        )
    }
}

const DAY: i64 = 86_400;

// ---------------------------------------------------------------- access

/// Whose campaign `cid` is, as far as the caller may know: the owning advertiser, 404 if no
/// one has it, 403 if it belongs to another advertiser.
async fn campaign_owner(st: &AppState, scope: Scope, cid: i64) -> ApiResult<i64> {
    let db = st.db.get().await?;
    let rows = db
        .query(
            "SELECT advertiser_id FROM campaigns WHERE campaign_id = $1
             UNION SELECT DISTINCT advertiser_id FROM rollups WHERE gran = 3 AND dim = 0 AND campaign_id = $1",
            &[&cid],
        )
        .await?;
    let owners: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    match scope {
        _ if owners.is_empty() => Err(ApiError::NotFound(format!("no campaign {cid}"))),
        Scope::All => Ok(owners[0]),
        Scope::Advertiser(me) if owners.contains(&me) => Ok(me),
        Scope::Advertiser(_) => Err(ApiError::Forbidden(format!(
            "campaign {cid} belongs to another advertiser"
        ))),
    }
}

// ---------------------------------------------------------------- handlers

async fn openapi_doc() -> Json<Value> {
    let mut doc = openapi::document();
    super::manage_doc::add(&mut doc);
    Json(doc)
}

async fn healthz(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    st.db.get().await?.query_one("SELECT 1", &[]).await?;
    Ok(Json(json!({ "status": "ok" })))
}

async fn me(caller: Caller) -> Json<Value> {
    let c = caller.claims;
    Json(json!({ "sub": c.sub, "role": c.role, "advertiser_id": c.adv, "exp": c.exp }))
}

async fn ingest(caller: Caller, State(st): State<AppState>) -> ApiResult<Json<Value>> {
    caller.scope.require_operator()?;
    Ok(Json(json!(st.ingest.snapshot())))
}

/// Prometheus text exposition: ingest counters, consumer lag, spend and budget per campaign.
/// Unauthenticated (for the scraper): the gateway must not route `/metrics` from outside.
async fn metrics(
    State(st): State<AppState>,
) -> ApiResult<([(axum::http::HeaderName, &'static str); 1], String)> {
    use std::fmt::Write;
    let s = st.ingest.snapshot();
    let mut out = String::with_capacity(4096);
    for (name, help, v) in [
        ("received", "Messages read from Kafka", s.received),
        (
            "rejected",
            "Messages that were not a readable event",
            s.rejected,
        ),
        (
            "out_of_range",
            "Events outside the retention window, not stored",
            s.out_of_range,
        ),
        ("inserted", "Events stored and counted", s.inserted),
        (
            "duplicates",
            "Events already stored (repeats, redeliveries), not counted again",
            s.duplicates,
        ),
        ("batches", "Batches committed", s.batches),
        ("retries", "Batch attempts retried", s.retries),
        (
            "pg_lost",
            "Ingest connections to PostgreSQL lost",
            s.pg_lost,
        ),
        (
            "pg_reconnects",
            "Ingest reconnections to PostgreSQL after a loss",
            s.pg_reconnects,
        ),
        (
            "rollup_folds",
            "Fold transactions that moved deferred rollup deltas into the rollups",
            s.rollup_folds,
        ),
        (
            "rollup_folded",
            "Deferred rollup deltas folded into the rollups",
            s.rollup_folded,
        ),
        (
            "rollup_fold_errors",
            "Fold attempts that failed (the deltas stay pending)",
            s.rollup_fold_errors,
        ),
        (
            "api_unavailable",
            "API requests answered 503 because PostgreSQL was unreachable",
            st.db.unavailable.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP helios_reporter_{name}_total {help}.\n# TYPE helios_reporter_{name}_total counter\nhelios_reporter_{name}_total {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP helios_reporter_last_batch_seconds Duration of the last batch transaction.\n# TYPE helios_reporter_last_batch_seconds gauge\nhelios_reporter_last_batch_seconds {}",
        s.last_batch_us as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "# HELP helios_reporter_pg_connected 1 while the ingest holds a PostgreSQL connection, 0 while it waits for one (ingest paused).\n# TYPE helios_reporter_pg_connected gauge\nhelios_reporter_pg_connected {}",
        s.pg_connected
    );
    let _ = writeln!(
        out,
        "# HELP helios_reporter_consumer_lag Messages in the partition not yet committed by this reporter.\n# TYPE helios_reporter_consumer_lag gauge"
    );
    for (t, p, lag) in st.ingest.lags() {
        let _ = writeln!(
            out,
            "helios_reporter_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {lag}"
        );
    }
    // The figures above never depend on PostgreSQL: while it is down they are what tells.
    let rows = match campaign_money(&st).await {
        Ok(rows) => rows,
        Err(e) => {
            let _ = writeln!(
                out,
                "# HELP helios_reporter_api_db_up 1 when the API could read PostgreSQL for this scrape.\n# TYPE helios_reporter_api_db_up gauge\nhelios_reporter_api_db_up 0"
            );
            tracing::debug!(error = %e, "metrics without the campaign figures");
            return Ok((
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                out,
            ));
        }
    };
    let _ = writeln!(
        out,
        "# HELP helios_reporter_api_db_up 1 when the API could read PostgreSQL for this scrape.\n# TYPE helios_reporter_api_db_up gauge\nhelios_reporter_api_db_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP helios_campaign_spend_micros Spend of the campaign's flight (all time without one), micros.\n# TYPE helios_campaign_spend_micros gauge"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "helios_campaign_spend_micros{{campaign=\"{}\"}} {}",
            r.get::<_, i64>(0),
            r.get::<_, i64>(1)
        );
    }
    let _ = writeln!(
        out,
        "# HELP helios_campaign_budget_micros Budget of the campaign, micros.\n# TYPE helios_campaign_budget_micros gauge"
    );
    for r in &rows {
        if let Some(b) = r.get::<_, Option<i64>>(2) {
            let _ = writeln!(
                out,
                "helios_campaign_budget_micros{{campaign=\"{}\"}} {b}",
                r.get::<_, i64>(0)
            );
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    ))
}

/// Spend and budget per campaign, for the metrics.
async fn campaign_money(st: &AppState) -> ApiResult<Vec<PgRow>> {
    let db = st.db.get().await?;
    Ok(db
        .query(
            "SELECT k.campaign_id, coalesce(s.spend, 0)::bigint / 1000, c.budget_micros
             FROM (SELECT campaign_id FROM campaigns UNION SELECT DISTINCT campaign_id FROM rollups WHERE gran = 3 AND dim = 0) k
             LEFT JOIN campaigns c USING (campaign_id)
             LEFT JOIN LATERAL (
                SELECT sum(r.spend_cpm_micros) AS spend FROM rollups r
                WHERE r.gran = 3 AND r.dim = 0 AND r.campaign_id = k.campaign_id
                  AND (c.start_at IS NULL OR r.bucket >= date_trunc('day', c.start_at))
             ) s ON true
             ORDER BY 1 LIMIT $1",
            &[&(MAX_ITEMS * 10)],
        )
        .await?)
}

#[derive(Debug, Serialize)]
struct AdvertiserOut {
    advertiser_id: i64,
    name: String,
    campaigns: i64,
}

const ADVERTISERS: &str = "
WITH known AS (
    SELECT advertiser_id, campaign_id FROM campaigns WHERE ($1::bigint IS NULL OR advertiser_id = $1)
    UNION
    SELECT DISTINCT advertiser_id, campaign_id FROM rollups
    WHERE gran = 3 AND dim = 0 AND ($1::bigint IS NULL OR advertiser_id = $1)
), ids AS (
    SELECT advertiser_id FROM known
    UNION SELECT advertiser_id FROM advertisers WHERE ($1::bigint IS NULL OR advertiser_id = $1)
)
SELECT i.advertiser_id, coalesce(a.name, 'advertiser ' || i.advertiser_id),
       (SELECT count(DISTINCT campaign_id) FROM known k WHERE k.advertiser_id = i.advertiser_id)
FROM ids i LEFT JOIN advertisers a USING (advertiser_id)
ORDER BY 1 LIMIT $2";

async fn list_advertisers(st: &AppState, adv: Option<i64>) -> ApiResult<Vec<AdvertiserOut>> {
    let db = st.db.get().await?;
    let rows = db.query(ADVERTISERS, &[&adv, &MAX_ITEMS]).await?;
    Ok(rows
        .iter()
        .map(|r| AdvertiserOut {
            advertiser_id: r.get(0),
            name: r.get(1),
            campaigns: r.get(2),
        })
        .collect())
}

async fn advertisers(caller: Caller, State(st): State<AppState>) -> ApiResult<Json<Value>> {
    let adv = caller.scope.advertiser_filter(None)?;
    Ok(Json(json!({ "items": list_advertisers(&st, adv).await? })))
}

async fn advertiser(
    caller: Caller,
    State(st): State<AppState>,
    P(id): P<i64>,
) -> ApiResult<Json<Value>> {
    let adv = caller.scope.advertiser_filter(Some(id))?;
    let mut items = list_advertisers(&st, adv).await?;
    match items.pop() {
        Some(a) => Ok(Json(json!(a))),
        None => Err(ApiError::NotFound(format!("no advertiser {id}"))),
    }
}

#[derive(Debug, Deserialize)]
struct CampaignsQ {
    advertiser_id: Option<i64>,
    from: Option<i64>,
    to: Option<i64>,
}

#[derive(Debug, Serialize)]
struct CampaignOut {
    campaign_id: i64,
    advertiser_id: i64,
    name: String,
    /// active, paused, archived (from the campaigns table) or unknown (seen in events only).
    status: String,
    /// An event within the last 15 minutes.
    delivering: bool,
    budget_micros: Option<i64>,
    start_at: Option<i64>,
    end_at: Option<i64>,
    last_event_at: Option<i64>,
    figures: Figures,
}

const CAMPAIGNS: &str = "
WITH known AS (
    SELECT advertiser_id, campaign_id FROM campaigns
    WHERE ($3::bigint IS NULL OR advertiser_id = $3) AND ($4::bigint IS NULL OR campaign_id = $4)
    UNION
    SELECT DISTINCT advertiser_id, campaign_id FROM rollups
    WHERE gran = 3 AND dim = 0 AND ($3::bigint IS NULL OR advertiser_id = $3)
      AND ($4::bigint IS NULL OR campaign_id = $4)
)
SELECT k.advertiser_id, k.campaign_id, coalesce(c.name, 'campaign ' || k.campaign_id),
       coalesce(c.status, 'unknown'), c.budget_micros,
       extract(epoch FROM c.start_at)::bigint, extract(epoch FROM c.end_at)::bigint,
       extract(epoch FROM l.last_ts)::bigint, coalesce(l.last_ts > now() - interval '15 minutes', false),
       s.*
FROM known k
LEFT JOIN campaigns c ON c.campaign_id = k.campaign_id AND c.advertiser_id = k.advertiser_id
LEFT JOIN LATERAL (
    SELECT max(last_ts) AS last_ts FROM rollups r
    WHERE r.gran = 3 AND r.dim = 0 AND r.advertiser_id = k.advertiser_id AND r.campaign_id = k.campaign_id
) l ON true
LEFT JOIN LATERAL (
    SELECT SUMS FROM rollups r
    WHERE r.gran = 2 AND r.dim = 0 AND r.advertiser_id = k.advertiser_id
      AND r.campaign_id = k.campaign_id AND r.bucket >= $1 AND r.bucket < $2
) s ON true
ORDER BY k.advertiser_id, k.campaign_id LIMIT $5";

async fn list_campaigns(
    st: &AppState,
    adv: Option<i64>,
    cid: Option<i64>,
    range: Range,
) -> ApiResult<Vec<CampaignOut>> {
    let db = st.db.get().await?;
    let (from, to) = range.times();
    let sql = CAMPAIGNS.replace("SUMS", SUMS);
    let rows = db
        .query(&sql, &[&from, &to, &adv, &cid, &MAX_ITEMS])
        .await?;
    Ok(rows
        .iter()
        .map(|r| CampaignOut {
            advertiser_id: r.get(0),
            campaign_id: r.get(1),
            name: r.get(2),
            status: r.get(3),
            budget_micros: r.get(4),
            start_at: r.get(5),
            end_at: r.get(6),
            last_event_at: r.get(7),
            delivering: r.get(8),
            figures: Figures::from_row(r, 9),
        })
        .collect())
}

async fn campaigns(
    caller: Caller,
    State(st): State<AppState>,
    Q(q): Q<CampaignsQ>,
) -> ApiResult<Json<Value>> {
    let adv = caller.scope.advertiser_filter(q.advertiser_id)?;
    let range = Range::parse(q.from, q.to, 7 * DAY)?;
    let items = list_campaigns(&st, adv, None, range).await?;
    Ok(Json(
        json!({ "from": range.from, "to": range.to, "items": items }),
    ))
}

#[derive(Debug, Deserialize)]
struct RangeQ {
    from: Option<i64>,
    to: Option<i64>,
}

async fn campaign(
    caller: Caller,
    State(st): State<AppState>,
    P(cid): P<i64>,
    Q(q): Q<RangeQ>,
) -> ApiResult<Json<Value>> {
    let adv = campaign_owner(&st, caller.scope, cid).await?;
    let range = Range::parse(q.from, q.to, 7 * DAY)?;
    let mut items = list_campaigns(&st, Some(adv), Some(cid), range).await?;
    match items.pop() {
        Some(c) => Ok(Json(
            json!({ "from": range.from, "to": range.to, "campaign": c }),
        )),
        None => Err(ApiError::NotFound(format!("no campaign {cid}"))),
    }
}

#[derive(Debug, Deserialize)]
struct StatsQ {
    from: Option<i64>,
    to: Option<i64>,
    granularity: Option<Granularity>,
    #[serde(default)]
    group_by: GroupBy,
    advertiser_id: Option<i64>,
    campaign_id: Option<i64>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Point {
    t: i64,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct Series {
    key: String,
    totals: Figures,
    points: Vec<Point>,
}

async fn stats(
    caller: Caller,
    State(st): State<AppState>,
    Q(q): Q<StatsQ>,
) -> ApiResult<Json<Value>> {
    let mut adv = caller.scope.advertiser_filter(q.advertiser_id)?;
    if let Some(cid) = q.campaign_id {
        let owner = campaign_owner(&st, caller.scope, cid).await?;
        if adv.is_some_and(|a| a != owner) {
            return Err(ApiError::NotFound(format!(
                "campaign {cid} is not advertiser {}'s",
                adv.unwrap_or_default()
            )));
        }
        adv = Some(owner);
    }
    if q.group_by == GroupBy::Advertiser {
        caller.scope.require_operator()?;
    }
    let range = Range::parse(q.from, q.to, DAY)?;
    let (dim, key) = q.group_by.dim_key();
    let gran = match q.granularity {
        Some(Granularity::Minute) if !fold::kept(fold::MINUTE, dim) => {
            return Err(ApiError::BadRequest(format!(
                "per-minute figures are kept for campaign totals only; use granularity=hour with group_by={}",
                q.group_by.as_str()
            )));
        }
        Some(g) => g,
        None => match Granularity::auto(range.to - range.from) {
            Granularity::Minute if !fold::kept(fold::MINUTE, dim) => Granularity::Hour,
            g => g,
        },
    };
    // Day figures per creative/site/country/device are the sums of their hour rows.
    let (read_gran, bucket) = if fold::kept(gran.code(), dim) {
        (gran.code(), "bucket")
    } else {
        (fold::HOUR, "date_trunc('day', bucket)")
    };
    // Align to whole buckets so that every bucket shown is complete in the range.
    let g = gran.secs();
    let range = Range {
        from: range.from - range.from.rem_euclid(g),
        to: range.to + (g - range.to.rem_euclid(g)) % g,
    };
    let buckets = (range.to - range.from) / g;
    if buckets > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{buckets} buckets of {gran:?} in the range (at most {MAX_BUCKETS}); use a coarser granularity"
        )));
    }
    let limit = q.limit.unwrap_or(10).clamp(1, MAX_GROUPS);
    // Rows per creative/site/country/device may still be pending (not yet folded: see
    // `ingest::rollup_fold`); `rollups_all` adds them to the folded ones, in one snapshot.
    let table = if dim == fold::DIM_TOTAL {
        "rollups"
    } else {
        "rollups_all"
    };
    let sql = format!(
        "WITH r AS (
            SELECT {bucket} AS bucket, {key} AS key, bids, nobids, wins, losses, impressions, clicks,
                   bid_cpm_micros, spend_cpm_micros
            FROM {table}
            WHERE gran = $1 AND dim = $2 AND bucket >= $3 AND bucket < $4
              AND ($5::bigint IS NULL OR advertiser_id = $5) AND ($6::bigint IS NULL OR campaign_id = $6)
        ), top AS (
            SELECT key FROM r GROUP BY key
            ORDER BY sum(impressions) DESC, sum(bids) DESC, key LIMIT $7
        )
        SELECT extract(epoch FROM bucket)::bigint, key, {SUMS}
        FROM r WHERE key IN (SELECT key FROM top)
        GROUP BY 1, 2 ORDER BY 2, 1"
    );
    let (from, to) = range.times();
    let db = st.db.get().await?;
    let rows = db
        .query(
            &sql,
            &[&read_gran, &dim, &from, &to, &adv, &q.campaign_id, &limit],
        )
        .await?;
    let mut series: Vec<Series> = Vec::new();
    for r in &rows {
        let key: String = r.get(1);
        let p = Point {
            t: r.get(0),
            figures: Figures::from_row(r, 2),
        };
        match series.last_mut() {
            Some(s) if s.key == key => s.points.push(p),
            _ => series.push(Series {
                key,
                totals: Figures::default(),
                points: vec![p],
            }),
        }
    }
    if q.group_by == GroupBy::None && series.is_empty() {
        series.push(Series {
            key: String::new(),
            totals: Figures::default(),
            points: Vec::new(),
        });
    }
    for s in &mut series {
        s.totals = sum_points(&s.points);
        if q.group_by == GroupBy::None {
            s.points = dense(std::mem::take(&mut s.points), range, g);
        }
    }
    series.sort_by(|a, b| {
        (b.totals.impressions, b.totals.bids, &a.key).cmp(&(
            a.totals.impressions,
            a.totals.bids,
            &b.key,
        ))
    });
    Ok(Json(json!({
        "from": range.from, "to": range.to, "granularity": gran, "step": g,
        "group_by": q.group_by, "advertiser_id": adv, "campaign_id": q.campaign_id,
        "series": series,
    })))
}

fn sum_points(points: &[Point]) -> Figures {
    let mut c = [0i64; 8];
    for p in points {
        for (acc, v) in c.iter_mut().zip(p.figures.sums) {
            *acc += v;
        }
    }
    Figures::from_sums(c)
}

/// One point per bucket in the range, zeros where nothing happened.
fn dense(points: Vec<Point>, range: Range, step: i64) -> Vec<Point> {
    let mut out = Vec::with_capacity(((range.to - range.from) / step) as usize);
    let mut it = points.into_iter().peekable();
    let mut t = range.from;
    while t < range.to {
        match it.peek() {
            Some(p) if p.t == t => out.extend(it.next()),
            _ => out.push(Point {
                t,
                figures: Figures::from_sums([0; 8]),
            }),
        }
        t += step;
    }
    out
}

#[derive(Debug, Serialize)]
struct PacingPoint {
    t: i64,
    spent_micros: i64,
    target_micros: Option<i64>,
}

async fn pacing(
    caller: Caller,
    State(st): State<AppState>,
    P(cid): P<i64>,
) -> ApiResult<Json<Value>> {
    let adv = campaign_owner(&st, caller.scope, cid).await?;
    let db = st.db.get().await?;
    let meta = db
        .query_opt(
            "SELECT budget_micros, extract(epoch FROM start_at)::bigint, extract(epoch FROM end_at)::bigint
             FROM campaigns WHERE campaign_id = $1 AND advertiser_id = $2",
            &[&cid, &adv],
        )
        .await?;
    let (budget, start, end): (Option<i64>, Option<i64>, Option<i64>) = match &meta {
        Some(r) => (r.get(0), r.get(1), r.get(2)),
        None => (None, None, None),
    };
    let first: Option<i64> = db
        .query_one(
            "SELECT extract(epoch FROM min(bucket))::bigint FROM rollups
             WHERE gran = 3 AND dim = 0 AND advertiser_id = $1 AND campaign_id = $2",
            &[&adv, &cid],
        )
        .await?
        .get(0);
    let now = now_secs() as i64;
    let Some(start) = start.or(first) else {
        return Ok(Json(json!({
            "campaign_id": cid, "budget_micros": budget, "spent_micros": 0, "points": [],
        })));
    };
    let stop = end.map_or(now, |e| e.min(now)).max(start + 1);
    let gran = if stop - start > 62 * DAY {
        Granularity::Day
    } else {
        Granularity::Hour
    };
    let g = gran.secs();
    let range = Range {
        from: start - start.rem_euclid(g),
        to: stop + (g - stop.rem_euclid(g)) % g,
    };
    let (from, to) = range.times();
    let rows = db
        .query(
            "SELECT extract(epoch FROM bucket)::bigint, spend_cpm_micros FROM rollups
             WHERE gran = $1 AND dim = 0 AND advertiser_id = $2 AND campaign_id = $3
               AND bucket >= $4 AND bucket < $5 ORDER BY bucket",
            &[&gran.code(), &adv, &cid, &from, &to],
        )
        .await?;
    let target = |t: i64| -> Option<i64> {
        let (b, e) = (budget?, end?);
        let frac = ((t - start).clamp(0, e - start)) as i128;
        Some((b as i128 * frac / (e - start).max(1) as i128) as i64)
    };
    // The curve starts at the flight's start with nothing spent.
    let mut points = vec![PacingPoint {
        t: start,
        spent_micros: 0,
        target_micros: target(start),
    }];
    let mut cum_cpm: i64 = 0;
    let mut it = rows.iter().peekable();
    let mut t = range.from;
    while t < range.to {
        while let Some(r) = it.peek() {
            if r.get::<_, i64>(0) > t {
                break;
            }
            cum_cpm += r.get::<_, i64>(1);
            it.next();
        }
        let end_of_bucket = (t + g).min(stop);
        points.push(PacingPoint {
            t: end_of_bucket,
            spent_micros: cum_cpm / 1000,
            target_micros: target(end_of_bucket),
        });
        t += g;
    }
    let spent = cum_cpm / 1000;
    let expected = target(stop);
    Ok(Json(json!({
        "campaign_id": cid, "advertiser_id": adv, "budget_micros": budget,
        "start_at": start, "end_at": end, "now": now, "granularity": gran,
        "spent_micros": spent, "expected_micros": expected,
        "pace": expected.filter(|&e| e > 0).map(|e| spent as f64 / e as f64),
        "remaining_micros": budget.map(|b| b - spent),
        "points": points,
    })))
}

#[derive(Debug, Deserialize)]
struct TopQ {
    from: Option<i64>,
    to: Option<i64>,
    advertiser_id: Option<i64>,
    campaign_id: Option<i64>,
    limit: Option<i64>,
}

async fn top_sites(
    caller: Caller,
    State(st): State<AppState>,
    Q(q): Q<TopQ>,
) -> ApiResult<Json<Value>> {
    let mut adv = caller.scope.advertiser_filter(q.advertiser_id)?;
    if let Some(cid) = q.campaign_id {
        let owner = campaign_owner(&st, caller.scope, cid).await?;
        if adv.is_some_and(|a| a != owner) {
            return Err(ApiError::NotFound(format!(
                "campaign {cid} is not this advertiser's"
            )));
        }
        adv = Some(owner);
    }
    let range = Range::parse(q.from, q.to, 7 * DAY)?;
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let (from, to) = range.times();
    let sql = format!(
        "SELECT val, {SUMS} FROM rollups_all
         WHERE gran = 2 AND dim = 2 AND bucket >= $1 AND bucket < $2
           AND ($3::bigint IS NULL OR advertiser_id = $3) AND ($4::bigint IS NULL OR campaign_id = $4)
         GROUP BY val ORDER BY sum(impressions) DESC, sum(bids) DESC, val LIMIT $5"
    );
    let db = st.db.get().await?;
    let rows = db
        .query(&sql, &[&from, &to, &adv, &q.campaign_id, &limit])
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(
            |r| json!({ "site_or_app": r.get::<_, String>(0), "figures": Figures::from_row(r, 1) }),
        )
        .collect();
    Ok(Json(
        json!({ "from": range.from, "to": range.to, "items": items }),
    ))
}

#[derive(Debug, Deserialize)]
struct NobidQ {
    from: Option<i64>,
    to: Option<i64>,
    exchange: Option<String>,
}

async fn nobid_reasons(
    caller: Caller,
    State(st): State<AppState>,
    Q(q): Q<NobidQ>,
) -> ApiResult<Json<Value>> {
    caller.scope.require_operator()?;
    let range = Range::parse(q.from, q.to, DAY)?;
    let gran = if range.to - range.from <= 6 * 3600 {
        1i16
    } else {
        2
    };
    let (from, to) = range.times();
    let db = st.db.get().await?;
    let rows = db
        .query(
            "SELECT reason, exchange, sum(nobids)::bigint FROM nobid_rollups
             WHERE gran = $1 AND bucket >= $2 AND bucket < $3 AND ($4::text IS NULL OR exchange = $4)
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $5",
            &[&gran, &from, &to, &q.exchange, &MAX_ITEMS],
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let code: i32 = r.get(0);
            let label = u16::try_from(code)
                .ok()
                .and_then(NoBidReason::from_code)
                .map_or("unknown", NoBidReason::as_str);
            json!({ "reason": code, "label": label, "exchange": r.get::<_, String>(1), "nobids": r.get::<_, i64>(2) })
        })
        .collect();
    Ok(Json(
        json!({ "from": range.from, "to": range.to, "items": items }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_derive_in_integers() {
        let f = Figures::from_sums([10, 0, 4, 6, 3, 1, 25_000_000, 3_300_000]);
        assert_eq!(f.spend_micros, 3_300);
        assert_eq!(f.ecpm_micros, Some(1_100_000));
        assert_eq!(f.win_rate, Some(0.4));
        assert_eq!(f.avg_bid_cpm_micros, Some(2_500_000));
        let z = Figures::from_sums([0; 8]);
        assert_eq!((z.win_rate, z.ecpm_micros, z.ctr), (None, None, None));
    }

    #[test]
    fn ranges_are_bounded() {
        assert!(Range::parse(Some(10), Some(5), DAY).is_err());
        assert!(Range::parse(Some(-1), Some(5), DAY).is_err());
        assert!(Range::parse(Some(0), Some(MAX_RANGE_SECS + 1), DAY).is_err());
        assert_eq!(
            Range::parse(None, Some(DAY * 2), DAY).unwrap(),
            Range {
                from: DAY,
                to: DAY * 2
            }
        );
        assert_eq!(Granularity::auto(3600), Granularity::Minute);
        assert_eq!(Granularity::auto(30 * DAY), Granularity::Hour);
        assert_eq!(Granularity::auto(90 * DAY), Granularity::Day);
    }

    #[test]
    fn dense_fills_gaps() {
        let p = |t| Point {
            t,
            figures: Figures::from_sums([1, 0, 0, 0, 0, 0, 0, 0]),
        };
        let out = dense(vec![p(60), p(180)], Range { from: 0, to: 240 }, 60);
        let ts: Vec<i64> = out.iter().map(|p| p.t).collect();
        assert_eq!(ts, vec![0, 60, 120, 180]);
        let bids: Vec<i64> = out.iter().map(|p| p.figures.bids).collect();
        assert_eq!(bids, vec![0, 1, 0, 1]);
    }
}

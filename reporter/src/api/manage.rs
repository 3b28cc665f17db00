//! Campaign management: the `/api/v1` routes that create and change advertisers, campaigns,
//! creatives and budgets, stored in PostgreSQL (`cm_*` tables, migration 0003) and published to
//! the appliances through Redis ([`super::publish`]).
//!
//! Every change runs the same steps, serialised by [`ControlPlane`]'s one dedicated connection
//! (and the `cm_set` row lock, for several reporters): load and check ownership (an advertiser
//! touches only its own campaigns; another advertiser's campaign answers 404), apply the change
//! to the campaign's spec, validate it with the bidder's own parser and rules
//! (`shards::CompiledSet::compile`, first alone for field errors, then the whole set), write the
//! campaign, its version row, an audit row and the next set version, commit, then publish the
//! whole set to Redis. A publish that fails is retried by [`ControlPlane::republish`] (every
//! [`REPUBLISH_EVERY`]) until Redis holds the latest version.
//!
//! Runs on the tokio workers; Redis calls run in `spawn_blocking`. Must never: publish a set the
//! bidder would refuse, or let an advertiser read or change another advertiser's campaign.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shards::{CampaignSet, CompiledSet, LoadError};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Transaction};

use super::AppState;
use super::auth::{Caller, Role, Scope};
use super::error::ApiError;
use super::publish::Publisher;
use super::routes::P;

/// Period of the background check that Redis holds the latest set.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(2);
/// Most rows in a history or audit answer.
pub const MAX_HISTORY: i64 = 500;

/// The routes this module adds (also listed in the OpenAPI document).
pub const ROUTES: &[&str] = &[
    "/api/v1/advertisers",
    "/api/v1/campaigns",
    "/api/v1/campaigns/{campaign_id}/spec",
    "/api/v1/campaigns/{campaign_id}/status",
    "/api/v1/campaigns/{campaign_id}/budget",
    "/api/v1/campaigns/{campaign_id}/creatives",
    "/api/v1/campaigns/{campaign_id}/creatives/{creative_id}",
    "/api/v1/campaigns/{campaign_id}/versions",
    "/api/v1/audit",
    "/api/v1/campaign-set",
];

/// Routes merged into the API router (their paths may share a path with a `GET` of `routes`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(ROUTES[0], post(upsert_advertiser))
        .route(ROUTES[1], post(create_campaign))
        .route(ROUTES[2], get(get_spec).put(put_spec))
        .route(ROUTES[3], put(put_status))
        .route(ROUTES[4], put(put_budget))
        .route(ROUTES[5], post(add_creative))
        .route(ROUTES[6], put(put_creative).delete(archive_creative))
        .route(ROUTES[7], get(versions))
        .route(ROUTES[8], get(audit))
        .route(ROUTES[9], get(set_status))
}

// ---------------------------------------------------------------- state

/// The control plane: a dedicated PostgreSQL connection for changes and the Redis publisher.
pub struct ControlPlane {
    pg_url: String,
    con: Mutex<Option<Client>>,
    publisher: Arc<Publisher>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlane")
    }
}

type Cp = Option<Extension<Arc<ControlPlane>>>;

fn cp(x: Cp) -> Result<Arc<ControlPlane>, ManageError> {
    x.map(|Extension(c)| c).ok_or_else(|| {
        ApiError::Unavailable(
            "campaign management is not configured (start the reporter with --campaigns-redis-url)"
                .into(),
        )
        .into()
    })
}

impl ControlPlane {
    pub fn new(pg_url: &str, redis_url: &str) -> anyhow::Result<ControlPlane> {
        Self::with_redis_ca(pg_url, redis_url, None)
    }

    /// As [`ControlPlane::new`]; `redis_ca_pem` verifies a `rediss://` Redis (`None`: the
    /// system's trust store).
    pub fn with_redis_ca(
        pg_url: &str,
        redis_url: &str,
        redis_ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<ControlPlane> {
        Ok(ControlPlane {
            pg_url: pg_url.to_owned(),
            con: Mutex::new(None),
            publisher: Arc::new(Publisher::new(redis_url, redis_ca_pem)?),
        })
    }

    /// Publishes the latest set when Redis holds an older one; returns the version Redis holds.
    pub async fn republish(&self) -> Result<u64, ManageError> {
        let mut g = self.con.lock().await;
        let client = self.client(&mut g).await?;
        let row = client
            .query_one("SELECT version, set_json FROM cm_set", &[])
            .await?;
        let (version, json): (i64, String) = (row.get(0), row.get(1));
        let p = Arc::clone(&self.publisher);
        let have = blocking(move || p.published_version()).await?;
        if have >= version as u64 {
            return Ok(have);
        }
        self.publish(version as u64, json).await
    }

    async fn publish(&self, version: u64, json: String) -> Result<u64, ManageError> {
        let set = CompiledSet::parse(json.as_bytes()).map_err(|e| {
            ApiError::Unavailable(format!("stored set {version} does not compile: {e}"))
        })?;
        let budgets: Vec<(u32, i64)> = set
            .compiled
            .iter()
            .map(|c| (c.id, c.total_budget.0))
            .collect();
        let p = Arc::clone(&self.publisher);
        blocking(move || p.publish(version, &json, &budgets)).await
    }

    async fn client<'a>(&self, g: &'a mut Option<Client>) -> Result<&'a mut Client, ManageError> {
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            let c = crate::db::connect(&self.pg_url)
                .await
                .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
            *g = Some(c);
        }
        g.as_mut()
            .ok_or_else(|| ApiError::Unavailable("no database connection".into()).into())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, super::publish::PublishError> + Send + 'static,
) -> Result<T, ManageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("publisher task: {e}")))?
        .map_err(|e| ApiError::Unavailable(format!("publishing to redis: {e}")).into())
}

/// Runs [`ControlPlane::republish`] every [`REPUBLISH_EVERY`] until the process ends.
pub fn spawn_republisher(cp: Arc<ControlPlane>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(REPUBLISH_EVERY);
        loop {
            t.tick().await;
            if let Err(e) = cp.republish().await {
                tracing::warn!(error = ?e, "republishing the campaign set failed");
            }
        }
    })
}

// ---------------------------------------------------------------- errors

/// One field that the bidder (or the API) refuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

#[derive(Debug)]
pub enum ManageError {
    Api(ApiError),
    /// 422 with `{"error": "invalid", "message", "errors": [{field, problem}]}`.
    Invalid(Vec<FieldError>),
    /// 409: the change is not allowed in the campaign's state.
    Conflict(String),
}

impl From<ApiError> for ManageError {
    fn from(e: ApiError) -> Self {
        ManageError::Api(e)
    }
}
impl From<tokio_postgres::Error> for ManageError {
    fn from(e: tokio_postgres::Error) -> Self {
        ManageError::Api(e.into())
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> ManageError {
    ManageError::Invalid(vec![FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }])
}

impl IntoResponse for ManageError {
    fn into_response(self) -> Response {
        match self {
            ManageError::Api(e) => e.into_response(),
            ManageError::Invalid(errors) => {
                let message = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.problem))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({ "error": "invalid", "message": message, "errors": errors })),
                )
                    .into_response()
            }
            ManageError::Conflict(m) => (
                StatusCode::CONFLICT,
                Json(json!({ "error": "conflict", "message": m })),
            )
                .into_response(),
        }
    }
}

type MResult<T> = Result<T, ManageError>;

/// A JSON body whose rejection is a 422 naming the body.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ManageError;
    async fn from_request(req: axum::extract::Request, s: &S) -> Result<Self, ManageError> {
        match Json::<Value>::from_request(req, s).await {
            Ok(Json(v)) => serde_json::from_value(v)
                .map(Body)
                .map_err(|e| invalid("body", e.to_string())),
            Err(e) => Err(invalid("body", e.body_text())),
        }
    }
}

// ---------------------------------------------------------------- validation

/// The bidder's verdict on one campaign spec alone: field errors named relative to the campaign
/// (`bid_cpm_micros`, `creatives[0].format`, `targeting.countries`).
pub fn check_spec(spec: &Value, utc_offset_minutes: i32) -> Result<(), Vec<FieldError>> {
    let adv = spec.get("advertiser_id").cloned().unwrap_or(Value::Null);
    let set = json!({
        "version": 1,
        "advertisers": [{ "id": adv, "utc_offset_minutes": utc_offset_minutes, "campaigns": [spec] }],
    });
    let bytes = serde_json::to_vec(&set).unwrap_or_default();
    CampaignSet::from_json(&bytes)
        .and_then(CompiledSet::compile)
        .map(|_| ())
        .map_err(|e| vec![field_error(&e)])
}

/// The field and problem of a refused set, relative to the one campaign when it names one.
pub fn field_error(e: &LoadError) -> FieldError {
    match e {
        LoadError::Json { path, source } => {
            let field = path
                .strip_prefix("advertisers[0].campaigns[0]")
                .map(|p| p.trim_start_matches('.'))
                .unwrap_or(path);
            // serde's message without the line/column of our own re-serialised document.
            let msg = source.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            FieldError {
                field: if field.is_empty() {
                    "body".into()
                } else {
                    field.into()
                },
                problem: msg,
            }
        }
        LoadError::Invalid { field, problem, .. } => FieldError {
            field: (*field).to_owned(),
            problem: problem.clone(),
        },
        other => FieldError {
            field: "campaign".into(),
            problem: other.to_string(),
        },
    }
}

// ---------------------------------------------------------------- the change pipeline

/// What a change did, for the audit log and the answer.
struct Outcome {
    action: &'static str,
    advertiser_id: Option<i64>,
    campaign_id: Option<i64>,
    detail: Value,
}

/// Advertisers and campaigns as stored, to build the set from.
async fn build_set(tx: &Transaction<'_>, version: i64) -> MResult<String> {
    let advs = tx
        .query(
            "SELECT advertiser_id, name, utc_offset_minutes FROM cm_advertisers ORDER BY advertiser_id",
            &[],
        )
        .await?;
    let camps = tx
        .query(
            "SELECT advertiser_id, spec FROM cm_campaigns WHERE status <> 'archived' ORDER BY campaign_id",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(advs.len());
    for a in &advs {
        let id: i64 = a.get(0);
        let campaigns: Vec<Value> = camps
            .iter()
            .filter(|c| c.get::<_, i64>(0) == id)
            .map(|c| c.get::<_, Value>(1))
            .collect();
        out.push(json!({
            "id": id, "name": a.get::<_, String>(1), "utc_offset_minutes": a.get::<_, i32>(2),
            "campaigns": campaigns,
        }));
    }
    Ok(json!({ "version": version, "advertisers": out }).to_string())
}

/// Runs `apply` in a transaction holding the set lock, validates the whole resulting set,
/// bumps the set version, audits, commits and publishes. Returns the answer body.
async fn run_change(cp: &ControlPlane, caller: &Caller, change: Change) -> MResult<Json<Value>> {
    let mut g = cp.con.lock().await;
    let client = cp.client(&mut g).await?;
    let tx = client.transaction().await?;
    let cur: i64 = tx
        .query_one("SELECT version FROM cm_set FOR UPDATE", &[])
        .await?
        .get(0);
    let outcome = apply(&tx, caller, change).await?;
    let version = cur + 1;
    let set_json = build_set(&tx, version).await?;
    if let Err(e) = CampaignSet::from_json(set_json.as_bytes()).and_then(CompiledSet::compile) {
        // The campaign alone passed; the set as a whole did not (e.g. a duplicate id).
        let fe = field_error(&e);
        return Err(ManageError::Invalid(vec![FieldError {
            field: fe.field,
            problem: format!("the campaign set would be refused: {e}"),
        }]));
    }
    tx.execute(
        "UPDATE cm_set SET version = $1, set_json = $2, changed_at = now()",
        &[&version, &set_json],
    )
    .await?;
    let role = match caller.claims.role {
        Role::Operator => "operator",
        Role::Advertiser => "advertiser",
    };
    tx.execute(
        "INSERT INTO cm_audit (actor, role, action, advertiser_id, campaign_id, set_version, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &caller.claims.sub,
            &role,
            &outcome.action,
            &outcome.advertiser_id,
            &outcome.campaign_id,
            &version,
            &outcome.detail,
        ],
    )
    .await?;
    tx.commit().await?;
    drop(g);
    let published = match cp.publish(version as u64, set_json).await {
        Ok(v) => v >= version as u64,
        Err(e) => {
            tracing::warn!(error = ?e, set_version = version, "publish failed; the republisher retries");
            false
        }
    };
    tracing::info!(actor = %caller.claims.sub, action = outcome.action,
        campaign_id = ?outcome.campaign_id, set_version = version, published, "campaign change");
    Ok(Json(json!({
        "set_version": version,
        "published": published,
        "advertiser_id": outcome.advertiser_id,
        "campaign_id": outcome.campaign_id,
        "result": outcome.detail,
    })))
}

/// The stored campaign, locked for the change; 404 when absent or another advertiser's.
async fn load_campaign(tx: &Transaction<'_>, scope: Scope, id: i64) -> MResult<(i64, Value, i64)> {
    let row = tx
        .query_opt(
            "SELECT advertiser_id, spec, version FROM cm_campaigns WHERE campaign_id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let not_found = || ApiError::NotFound(format!("no campaign {id}")).into();
    let row = row.ok_or_else(not_found)?;
    let adv: i64 = row.get(0);
    if let Scope::Advertiser(me) = scope
        && me != adv
    {
        return Err(not_found());
    }
    Ok((adv, row.get(1), row.get(2)))
}

async fn offset_of(tx: &Transaction<'_>, adv: i64) -> MResult<i32> {
    tx.query_opt(
        "SELECT utc_offset_minutes FROM cm_advertisers WHERE advertiser_id = $1",
        &[&adv],
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(|| {
        invalid(
            "advertiser_id",
            format!("advertiser {adv} is not registered"),
        )
    })
}

/// Validates `spec` and writes it as the campaign's next version (`prev` = 0 for a new one);
/// also keeps the reporting `campaigns` row (name, status, budget, flight) in step.
async fn store_campaign(
    tx: &Transaction<'_>,
    caller: &Caller,
    id: i64,
    adv: i64,
    prev: i64,
    spec: &Value,
) -> MResult<i64> {
    check_spec(spec, offset_of(tx, adv).await?).map_err(ManageError::Invalid)?;
    let status = spec["status"].as_str().unwrap_or("active");
    let total = spec["total_budget_micros"].as_i64().unwrap_or(0);
    let daily = spec["daily_budget_micros"].as_i64();
    let version = prev + 1;
    let set_v: i64 = tx
        .query_one("SELECT version + 1 FROM cm_set", &[])
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO cm_campaigns (campaign_id, advertiser_id, status, total_budget_micros,
            daily_budget_micros, spec, version, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (campaign_id) DO UPDATE SET status = $3, total_budget_micros = $4,
            daily_budget_micros = $5, spec = $6, version = $7, updated_by = $8, updated_at = now()",
        &[
            &id,
            &adv,
            &status,
            &total,
            &daily,
            spec,
            &version,
            &caller.claims.sub,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO cm_campaign_versions (campaign_id, version, spec, set_version, changed_by)
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &version, spec, &set_v, &caller.claims.sub],
    )
    .await?;
    let name = spec["name"].as_str().unwrap_or("");
    let start = spec["start_unix_s"].as_i64();
    let end = spec["end_unix_s"].as_i64();
    tx.execute(
        "INSERT INTO campaigns (campaign_id, advertiser_id, name, status, budget_micros, start_at, end_at)
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6::bigint), to_timestamp($7::bigint))
         ON CONFLICT (campaign_id) DO UPDATE SET advertiser_id = $2, name = $3, status = $4,
            budget_micros = $5, start_at = to_timestamp($6::bigint), end_at = to_timestamp($7::bigint),
            updated_at = now()",
        &[&id, &adv, &name, &status, &total, &start, &end],
    )
    .await?;
    Ok(version)
}

/// An object body, or a 422.
fn object(v: Value) -> MResult<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(invalid("body", "must be a JSON object")),
    }
}

fn campaign_outcome(action: &'static str, adv: i64, id: i64, version: i64, spec: Value) -> Outcome {
    Outcome {
        action,
        advertiser_id: Some(adv),
        campaign_id: Some(id),
        detail: json!({ "version": version, "spec": spec }),
    }
}

// ---------------------------------------------------------------- changes

/// One change, applied inside [`run_change`]'s transaction by [`apply`].
enum Change {
    Advertiser(AdvertiserIn),
    Create(Map<String, Value>),
    Spec(i64, Map<String, Value>),
    Status(i64, String, &'static str),
    Budget(i64, BudgetIn),
    AddCreative(i64, Value),
    PutCreative(i64, i64, Map<String, Value>),
    ArchiveCreative(i64, i64),
}

async fn apply(tx: &Transaction<'_>, caller: &Caller, change: Change) -> MResult<Outcome> {
    match change {
        Change::Advertiser(a) => {
            let id = i64::from(a.advertiser_id);
            tx.execute(
                "INSERT INTO cm_advertisers (advertiser_id, name, utc_offset_minutes, updated_by)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (advertiser_id) DO UPDATE SET name = $2, utc_offset_minutes = $3,
                    updated_by = $4, updated_at = now(), version = cm_advertisers.version + 1",
                &[&id, &a.name, &a.utc_offset_minutes, &caller.claims.sub],
            )
            .await?;
            tx.execute(
                "INSERT INTO advertisers (advertiser_id, name) VALUES ($1, $2)
                 ON CONFLICT (advertiser_id) DO UPDATE SET name = $2",
                &[&id, &a.name],
            )
            .await?;
            Ok(Outcome {
                action: "advertiser.upsert",
                advertiser_id: Some(id),
                campaign_id: None,
                detail: json!({ "name": a.name, "utc_offset_minutes": a.utc_offset_minutes }),
            })
        }
        Change::Create(mut spec) => {
            let adv = spec["advertiser_id"].as_i64().unwrap_or(0);
            let id = match spec.get("id") {
                Some(v) => v
                    .as_i64()
                    .filter(|i| *i > 0 && *i <= i64::from(u32::MAX))
                    .ok_or_else(|| invalid("id", "must be an integer in 1..=4294967295"))?,
                None => tx
                    .query_one(
                        "SELECT coalesce(max(campaign_id), 0) + 1 FROM cm_campaigns",
                        &[],
                    )
                    .await?
                    .get(0),
            };
            if tx
                .query_opt("SELECT 1 FROM cm_campaigns WHERE campaign_id = $1", &[&id])
                .await?
                .is_some()
            {
                return Err(invalid("id", format!("campaign {id} exists")));
            }
            spec.insert("id".into(), json!(id));
            let spec = Value::Object(spec);
            let v = store_campaign(tx, caller, id, adv, 0, &spec).await?;
            Ok(campaign_outcome("campaign.create", adv, id, v, spec))
        }
        Change::Spec(id, mut spec) => {
            let (adv, old, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&old)?;
            if spec.get("id").is_some_and(|v| v.as_i64() != Some(id)) {
                return Err(invalid("id", "cannot change"));
            }
            if spec
                .get("advertiser_id")
                .is_some_and(|v| v.as_i64() != Some(adv))
            {
                return Err(invalid("advertiser_id", "cannot change"));
            }
            spec.insert("id".into(), json!(id));
            spec.insert("advertiser_id".into(), json!(adv));
            if spec.get("status").and_then(Value::as_str) == Some("archived") {
                return Err(invalid("status", "archive through PUT …/status"));
            }
            spec.entry("status").or_insert(old["status"].clone());
            let spec = Value::Object(spec);
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome("campaign.update", adv, id, v, spec))
        }
        Change::Status(id, status, action) => {
            let (adv, mut spec, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&spec)?;
            spec["status"] = json!(status);
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome(action, adv, id, v, spec))
        }
        Change::Budget(id, b) => {
            let (adv, mut spec, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&spec)?;
            spec["total_budget_micros"] = b.total_budget_micros;
            if let Some(d) = b.daily_budget_micros {
                spec["daily_budget_micros"] = d;
            }
            if let Some(p) = b.pacing {
                spec["pacing"] = p;
            }
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome("campaign.budget", adv, id, v, spec))
        }
        Change::AddCreative(id, cr) => {
            let (adv, mut spec, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&spec)?;
            creatives_mut(&mut spec)?.push(cr);
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome("creative.create", adv, id, v, spec))
        }
        Change::PutCreative(id, crid, cr) => {
            let (adv, mut spec, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&spec)?;
            let slot = creatives_mut(&mut spec)?
                .iter_mut()
                .find(|c| c["id"].as_i64() == Some(crid))
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no creative {crid} in campaign {id}"))
                })?;
            *slot = Value::Object(cr);
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome("creative.update", adv, id, v, spec))
        }
        Change::ArchiveCreative(id, crid) => {
            let (adv, mut spec, prev) = load_campaign(tx, caller.scope, id).await?;
            refuse_archived(&spec)?;
            let list = creatives_mut(&mut spec)?;
            let before = list.len();
            list.retain(|c| c["id"].as_i64() != Some(crid));
            if list.len() == before {
                return Err(
                    ApiError::NotFound(format!("no creative {crid} in campaign {id}")).into(),
                );
            }
            let v = store_campaign(tx, caller, id, adv, prev, &spec).await?;
            Ok(campaign_outcome("creative.archive", adv, id, v, spec))
        }
    }
}

fn refuse_archived(spec: &Value) -> MResult<()> {
    if spec["status"] == "archived" {
        return Err(ManageError::Conflict(
            "the campaign is archived; archived campaigns cannot change".into(),
        ));
    }
    Ok(())
}

fn creatives_mut(spec: &mut Value) -> MResult<&mut Vec<Value>> {
    spec.get_mut("creatives")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| invalid("creatives", "the stored campaign has no creatives list"))
}

// ---------------------------------------------------------------- handlers

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvertiserIn {
    advertiser_id: u32,
    name: String,
    #[serde(default)]
    utc_offset_minutes: i32,
}

/// Operator only: creates or renames an advertiser (and sets its time zone).
async fn upsert_advertiser(
    caller: Caller,
    x: Cp,
    Body(a): Body<AdvertiserIn>,
) -> MResult<Json<Value>> {
    caller.scope.require_operator()?;
    let cp = cp(x)?;
    if a.advertiser_id == 0 {
        return Err(invalid("advertiser_id", "must be > 0"));
    }
    if !(-840..=840).contains(&a.utc_offset_minutes) {
        return Err(invalid("utc_offset_minutes", "must be within ±840"));
    }
    if a.name.trim().is_empty() || a.name.len() > 200 {
        return Err(invalid("name", "1..=200 bytes"));
    }
    run_change(&cp, &caller, Change::Advertiser(a)).await
}

/// Creates a campaign from a spec in the campaigns-file format. `id` may be omitted (the next
/// free id is taken); an advertiser's token fills in (or must match) `advertiser_id`.
async fn create_campaign(caller: Caller, x: Cp, Body(body): Body<Value>) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    let mut spec = object(body)?;
    let adv = match (
        caller.scope,
        spec.get("advertiser_id").and_then(Value::as_i64),
    ) {
        (Scope::Advertiser(me), None) => me,
        (Scope::Advertiser(me), Some(a)) if a == me => me,
        (Scope::Advertiser(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "this token may only create campaigns for its own advertiser".into(),
            )
            .into());
        }
        (Scope::All, Some(a)) => a,
        (Scope::All, None) => return Err(invalid("advertiser_id", "required")),
    };
    spec.insert("advertiser_id".into(), json!(adv));
    spec.entry("status").or_insert(json!("active"));
    run_change(&cp, &caller, Change::Create(spec)).await
}

async fn get_spec(
    caller: Caller,
    State(st): State<AppState>,
    P(id): P<i64>,
) -> MResult<Json<Value>> {
    let db = st.db.get().await?;
    let row = db
        .query_opt(
            "SELECT advertiser_id, spec, version, updated_by, extract(epoch FROM updated_at)::bigint
             FROM cm_campaigns WHERE campaign_id = $1",
            &[&id],
        )
        .await?;
    let not_found = || ManageError::from(ApiError::NotFound(format!("no campaign {id}")));
    let row = row.ok_or_else(not_found)?;
    let adv: i64 = row.get(0);
    if caller.scope.advertiser_filter(Some(adv)).is_err() {
        return Err(not_found());
    }
    Ok(Json(json!({
        "campaign_id": id, "advertiser_id": adv, "spec": row.get::<_, Value>(1),
        "version": row.get::<_, i64>(2), "updated_by": row.get::<_, String>(3),
        "updated_at": row.get::<_, i64>(4),
    })))
}

/// Replaces the spec (id and advertiser cannot change).
async fn put_spec(
    caller: Caller,
    x: Cp,
    P(id): P<i64>,
    Body(body): Body<Value>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    let spec = object(body)?;
    run_change(&cp, &caller, Change::Spec(id, spec)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusIn {
    status: String,
}

/// Pause (`paused`), resume (`active`) or archive (`archived`, final: leaves the bidding set).
async fn put_status(
    caller: Caller,
    x: Cp,
    P(id): P<i64>,
    Body(s): Body<StatusIn>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    let action = match s.status.as_str() {
        "active" => "campaign.resume",
        "paused" => "campaign.pause",
        "archived" => "campaign.archive",
        _ => return Err(invalid("status", "one of active, paused, archived")),
    };
    run_change(&cp, &caller, Change::Status(id, s.status, action)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetIn {
    total_budget_micros: Value,
    #[serde(default)]
    daily_budget_micros: Option<Value>,
    #[serde(default)]
    pacing: Option<Value>,
}

/// Changes the total (and optionally daily) budget and pacing. The new total moves the
/// campaign's remaining budget in Redis by the difference on publish.
async fn put_budget(
    caller: Caller,
    x: Cp,
    P(id): P<i64>,
    Body(b): Body<BudgetIn>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    run_change(&cp, &caller, Change::Budget(id, b)).await
}

async fn add_creative(
    caller: Caller,
    x: Cp,
    P(id): P<i64>,
    Body(cr): Body<Value>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    let cr = Value::Object(object(cr)?);
    run_change(&cp, &caller, Change::AddCreative(id, cr)).await
}

async fn put_creative(
    caller: Caller,
    x: Cp,
    P((id, crid)): P<(i64, i64)>,
    Body(cr): Body<Value>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    let mut cr = object(cr)?;
    cr.insert("id".into(), json!(crid));
    run_change(&cp, &caller, Change::PutCreative(id, crid, cr)).await
}

/// Archives a creative: it leaves the campaign (and the bidding set); its last form stays in
/// the campaign's versions.
async fn archive_creative(
    caller: Caller,
    x: Cp,
    P((id, crid)): P<(i64, i64)>,
) -> MResult<Json<Value>> {
    let cp = cp(x)?;
    run_change(&cp, &caller, Change::ArchiveCreative(id, crid)).await
}

/// The campaign's versions, newest first.
async fn versions(
    caller: Caller,
    State(st): State<AppState>,
    P(id): P<i64>,
) -> MResult<Json<Value>> {
    let db = st.db.get().await?;
    let adv: Option<i64> = db
        .query_opt(
            "SELECT advertiser_id FROM cm_campaigns WHERE campaign_id = $1",
            &[&id],
        )
        .await?
        .map(|r| r.get(0));
    let not_found = || ManageError::from(ApiError::NotFound(format!("no campaign {id}")));
    let adv = adv.ok_or_else(not_found)?;
    if caller.scope.advertiser_filter(Some(adv)).is_err() {
        return Err(not_found());
    }
    let rows = db
        .query(
            "SELECT version, spec, set_version, changed_by, extract(epoch FROM changed_at)::bigint
             FROM cm_campaign_versions WHERE campaign_id = $1 ORDER BY version DESC LIMIT $2",
            &[&id, &MAX_HISTORY],
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({ "version": r.get::<_, i64>(0), "spec": r.get::<_, Value>(1),
                "set_version": r.get::<_, i64>(2), "changed_by": r.get::<_, String>(3),
                "changed_at": r.get::<_, i64>(4) })
        })
        .collect();
    Ok(Json(json!({ "campaign_id": id, "items": items })))
}

#[derive(Debug, Deserialize)]
struct AuditQ {
    campaign_id: Option<i64>,
    advertiser_id: Option<i64>,
}

/// The audit log, newest first: an operator sees every entry, an advertiser its own.
async fn audit(
    caller: Caller,
    State(st): State<AppState>,
    super::routes::Q(q): super::routes::Q<AuditQ>,
) -> MResult<Json<Value>> {
    let adv = caller.scope.advertiser_filter(q.advertiser_id)?;
    let db = st.db.get().await?;
    let rows = db
        .query(
            "SELECT id, extract(epoch FROM at)::bigint, actor, role, action, advertiser_id,
                    campaign_id, set_version, detail
             FROM cm_audit
             WHERE ($1::bigint IS NULL OR advertiser_id = $1)
               AND ($2::bigint IS NULL OR campaign_id = $2)
             ORDER BY id DESC LIMIT $3",
            &[&adv, &q.campaign_id, &MAX_HISTORY],
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({ "id": r.get::<_, i64>(0), "at": r.get::<_, i64>(1),
                "actor": r.get::<_, String>(2), "role": r.get::<_, String>(3),
                "action": r.get::<_, String>(4), "advertiser_id": r.get::<_, Option<i64>>(5),
                "campaign_id": r.get::<_, Option<i64>>(6), "set_version": r.get::<_, Option<i64>>(7),
                "detail": r.get::<_, Value>(8) })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The stored set version and the one Redis holds (what the appliances load).
async fn set_status(caller: Caller, State(st): State<AppState>, x: Cp) -> MResult<Json<Value>> {
    let _ = caller;
    let db = st.db.get().await?;
    let v: i64 = db
        .query_one("SELECT version FROM cm_set", &[])
        .await?
        .get(0);
    let published = match x {
        Some(Extension(cp)) => {
            let p = Arc::clone(&cp.publisher);
            blocking(move || p.published_version()).await.ok()
        }
        None => None,
    };
    Ok(Json(
        json!({ "version": v, "published_version": published }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "id": 7, "advertiser_id": 1, "name": "x", "status": "active",
            "bid_cpm_micros": 1_500_000, "total_budget_micros": 1_000_000_000,
            "creatives": [{ "id": 1, "format": { "type": "banner", "w": 300, "h": 250 },
                            "adm": "<a>ad</a>" }]
        })
    }

    #[test]
    fn accepts_what_the_bidder_accepts() {
        assert_eq!(check_spec(&spec(), 0), Ok(()));
    }

    #[test]
    fn names_the_field_the_bidder_refuses() {
        let mut s = spec();
        s["bid_cpm_micros"] = json!(0);
        let e = check_spec(&s, 0).unwrap_err();
        assert_eq!(e[0].field, "bid_cpm_micros");
        let mut s = spec();
        s["creatives"][0]["format"] = json!({ "type": "banner", "w": 0, "h": 250 });
        assert_eq!(
            check_spec(&s, 0).unwrap_err()[0].field,
            "creatives[].format"
        );
        let mut s = spec();
        s["targeting"] = json!({ "countries": ["us"] });
        assert_eq!(
            check_spec(&s, 0).unwrap_err()[0].field,
            "targeting.countries"
        );
        let mut s = spec();
        s["status"] = json!("running");
        assert_eq!(check_spec(&s, 0).unwrap_err()[0].field, "status");
        let mut s = spec();
        s["colour"] = json!("red");
        let e = check_spec(&s, 0).unwrap_err();
        assert!(e[0].problem.contains("colour"), "{e:?}");
        let mut s = spec();
        s["creatives"][0]["adm"] = json!(5);
        assert_eq!(check_spec(&s, 0).unwrap_err()[0].field, "creatives[0].adm");
    }
}

//! `helios-conventional`: the baseline — what a team would build without Helios's design.
//!
//! tokio (multi-threaded) + axum; every request body decoded into an owned `serde_json::Value`;
//! one Redis round trip per request for the user's profile; the same campaign logic as Helios
//! (`shards::Shard::decide`); a bid response built as an owned `Value`; and one event per
//! decision produced inline to Kafka with rdkafka's `FutureProducer`, awaited before answering.
//! Deliberately ordinary: nothing here is tuned. Must never: be used for anything but comparison.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use codec::{BidRequest, ValidRequest};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{Value, json};
use shards::{CompiledSet, Decision, ProfileView, Shard};

/// A deliberately conventional bidder for side-by-side comparison with Helios.
///
/// Per request: owned serde_json decoding, a Redis HGETALL of the user's profile hash
/// (`{profile-prefix}{user id}`, the layout the profile cache replicates), the same decision as
/// Helios (`shards`), one JSON event produced to Kafka inline (awaited), and an owned JSON
/// response. `POST /openrtb2/bid` → 200 with a bid response or 204.
#[derive(Debug, Parser)]
#[command(name = "helios-conventional", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Redis URL holding the profiles.
    #[arg(
        long,
        env = "HELIOS_REDIS_URL",
        default_value = "redis://127.0.0.1:6390/"
    )]
    redis_url: String,
    /// Key prefix of a profile hash; the user id (`user.buyeruid`, else `user.id`) follows.
    #[arg(long, default_value = "helios:profile:")]
    profile_prefix: String,
    /// Kafka bootstrap servers for the events.
    #[arg(long, env = "HELIOS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Topic the bid / no-bid events go to.
    #[arg(long, default_value = "conventional.bids")]
    topic: String,
    /// Do not await the delivery report (fire and forget: the send is spawned).
    #[arg(long)]
    no_await_delivery: bool,
    /// Campaigns file (the shards JSON format, `{"version":N,"campaigns":[…]}`).
    #[arg(long)]
    campaigns: PathBuf,
    /// Tokio worker threads (default: the CPUs this process may use).
    #[arg(long)]
    workers: Option<usize>,
    /// Base of the notice URLs put in nurl/burl/lurl.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    notice_base: String,
}

struct AppState {
    redis: redis::aio::MultiplexedConnection,
    producer: FutureProducer,
    topic: String,
    await_delivery: bool,
    /// The campaign state behind one lock, as a conventional service shares it between workers.
    shard: std::sync::Mutex<Shard>,
    profile_prefix: String,
    notice_base: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    tracing_subscriber::fmt().json().init();
    let workers = a.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(serve(a))
}

async fn serve(a: Args) -> anyhow::Result<()> {
    let json = std::fs::read(&a.campaigns)
        .with_context(|| format!("reading {}", a.campaigns.display()))?;
    let campaigns = CompiledSet::parse(&json).context("loading campaigns")?;
    let redis = redis::Client::open(a.redis_url.as_str())
        .context("redis url")?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.kafka_brokers)
        .set("message.timeout.ms", "5000")
        .create()
        .context("creating the kafka producer")?;
    let state = Arc::new(AppState {
        redis,
        producer,
        topic: a.topic.clone(),
        await_delivery: !a.no_await_delivery,
        shard: std::sync::Mutex::new(Shard::new(0, campaigns)),
        profile_prefix: a.profile_prefix.clone(),
        notice_base: a.notice_base.clone(),
    });
    let app = Router::new()
        .route("/openrtb2/bid", post(bid))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    tracing::info!(listen = %a.listen, "conventional bidder up");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

/// The user's profile as an owned map, read from the Redis hash.
struct OwnedProfile {
    segments: HashMap<u32, u16>,
    freq: HashMap<u32, Vec<(u64, u32)>>,
}

impl OwnedProfile {
    fn from_hash(h: HashMap<String, String>) -> OwnedProfile {
        let mut segments = HashMap::new();
        let mut freq: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
        if let Some(s) = h.get("seg") {
            for pair in s.split(',') {
                if let Some((id, w)) = pair.split_once(':')
                    && let (Ok(id), Ok(w)) = (id.parse(), w.parse())
                {
                    segments.insert(id, w);
                }
            }
        }
        for (k, v) in &h {
            let mut parts = k.split(':');
            if parts.next() == Some("f")
                && let (Some(Ok(c)), Some(Ok(hour)), Ok(n)) = (
                    parts.next().map(str::parse::<u32>),
                    parts.next().map(str::parse::<u64>),
                    v.parse::<u32>(),
                )
            {
                freq.entry(c).or_default().push((hour, n));
            }
        }
        OwnedProfile { segments, freq }
    }
}

impl ProfileView for OwnedProfile {
    fn segment_weight(&self, segment: u32) -> Option<u16> {
        self.segments.get(&segment).copied()
    }
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32 {
        self.freq.get(&campaign).map_or(0, |v| {
            v.iter()
                .filter(|(h, _)| h * 3600 + 3599 >= since_unix_s)
                .map(|(_, n)| n)
                .sum()
        })
    }
}

async fn bid(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    // 1. Owned decode of the whole body.
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let req = match BidRequest::deserialize(&v) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let valid = match ValidRequest::new(req) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // 2. A Redis round trip for the profile.
    let uid = v["user"]["buyeruid"]
        .as_str()
        .or_else(|| v["user"]["id"].as_str())
        .map(str::to_owned);
    let mut profile = None;
    if let Some(uid) = &uid {
        let mut conn = s.redis.clone();
        let key = format!("{}{}", s.profile_prefix, uid);
        match conn.hgetall::<_, HashMap<String, String>>(&key).await {
            Ok(h) if !h.is_empty() => profile = Some(OwnedProfile::from_hash(h)),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "redis"),
        }
    }
    // 3. The same decision as Helios.
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut decision = Decision::default();
    // Bid details copied out so the lock is not held across the awaits below.
    let mut placed = Vec::new();
    {
        let Ok(mut shard) = s.shard.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        shard.decide(
            &valid,
            profile.as_ref().map(|p| p as &dyn ProfileView),
            now_ns,
            &mut decision,
        );
        let set = shard.set();
        for b in &decision.bids {
            let c = &set.campaigns[b.campaign_index as usize];
            let cr = &c.creatives[b.creative_index as usize];
            let (w, h) = match cr.format {
                shards::campaign::Format::Banner { w, h } => (Some(w), Some(h)),
                _ => (None, None),
            };
            placed.push((*b, cr.adomain.clone(), cr.adm.clone(), w, h));
        }
    }
    // 4. Events, inline.
    let request_id = valid.id().to_owned();
    let event = if decision.bids.is_empty() {
        json!({"kind": "nobid", "request_id": request_id, "reason": decision.no_bid.map(|r| format!("{r:?}")), "ts_unix_ns": now_ns})
    } else {
        json!({"kind": "bid", "request_id": request_id, "ts_unix_ns": now_ns, "user_id": uid,
               "bids": decision.bids.iter().map(|b| json!({
                   "imp_id": valid.req().imp[b.imp_index as usize].id.as_deref(),
                   "campaign_id": b.campaign_id, "creative_id": b.creative_id,
                   "price_micros": b.price.0})).collect::<Vec<_>>()})
    };
    let payload = serde_json::to_vec(&event).unwrap_or_default();
    let key = decision
        .bids
        .first()
        .map_or_else(|| request_id.clone(), |b| b.campaign_id.to_string());
    if s.await_delivery {
        let rec = FutureRecord::to(&s.topic).payload(&payload).key(&key);
        if let Err((e, _)) = s.producer.send(rec, Duration::from_secs(1)).await {
            tracing::warn!(error = %e, "kafka");
        }
    } else {
        let st = s.clone();
        tokio::spawn(async move {
            let rec = FutureRecord::to(&st.topic).payload(&payload).key(&key);
            if let Err((e, _)) = st.producer.send(rec, Duration::from_secs(1)).await {
                tracing::warn!(error = %e, "kafka");
            }
        });
    }
    if decision.bids.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    // 5. An owned response.
    let bids: Vec<Value> = placed
        .iter()
        .map(|(b, adomain, adm, w, h)| {
            let imp_id = valid.req().imp[b.imp_index as usize]
                .id
                .as_deref()
                .unwrap_or_default();
            let q = format!(
                "r={}&i={}&c={}&cr={}&b={}",
                request_id, imp_id, b.campaign_id, b.creative_id, b.price.0
            );
            // The conventional way: the price as a JSON float (Helios writes decimal text from micros).
            json!({
                "id": format!("{request_id}-{imp_id}"), "impid": imp_id,
                "price": b.price.0 as f64 / 1e6, "crid": b.creative_id.to_string(), "cid": b.campaign_id.to_string(),
                "adomain": adomain, "w": w, "h": h, "adm": adm,
                "nurl": format!("{}/notice/win?{q}&p=${{AUCTION_PRICE}}", s.notice_base),
                "burl": format!("{}/notice/billing?{q}&p=${{AUCTION_PRICE}}", s.notice_base),
                "lurl": format!("{}/notice/loss?{q}&l=${{AUCTION_LOSS}}", s.notice_base),
            })
        })
        .collect();
    let resp =
        json!({"id": request_id, "cur": "USD", "seatbid": [{"seat": "conventional", "bid": bids}]});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&resp).unwrap_or_default(),
    )
        .into_response()
}

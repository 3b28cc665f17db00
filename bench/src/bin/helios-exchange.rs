//! `helios-exchange`: an ad exchange simulator — the traffic source of `make demo`.
//!
//! One tokio `current_thread` runtime: a fixed-rate schedule spawns one task per auction; each
//! task posts the request to every bidder, settles the auction (`bench::exchange::settle`) and
//! fires the notices. All state lives on that one thread (`Rc`/`RefCell`). Bounded: auctions and
//! notices in flight, idle connections kept per host. Must never: let a slow bidder stall the
//! schedule (per-bidder timeout = the request's `tmax`), or spend in floats (micros throughout).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::auction::AuctionKind;
use bench::corpus::{self, CorpusConfig, UserIds};
use bench::exchange::{self, Auctioned, ImpSlot, NoticeKind, Rivals, Rules, Tally};
use bench::http::{self, HttpUrl};
use bench::latency::{Recorder, Schedule};
use bench::rng::Rng;
use clap::{Parser, ValueEnum};
use codec::Micros;
use codec::response::parsed::BidResponse;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Simulates an ad exchange: sends OpenRTB 2.6 bid requests at a fixed rate to one or more
/// bidders, runs the auction per imp (first price by default, second price optional, imp floors,
/// optional simulated rival bidders), then calls the winner's `nurl` and `burl` (a share of wins
/// renders) and the losers' `lurl` with the OpenRTB macros filled (`${AUCTION_PRICE}`,
/// `${AUCTION_LOSS}`, `${AUCTION_MIN_TO_WIN}`, `${AUCTION_ID}`, `${AUCTION_IMP_ID}`, …). A share of
/// billed impressions is clicked: the click URL is the first `http://…/notice/click?…` tracker in
/// the bid's `adm`, else the billing URL with its path replaced by `/notice/click` (same query).
///
/// Requests come from the deterministic corpus generator (`--seed`, `--users`, `--user-ids`),
/// so every request id is unique, or from a corpus file (ids then get a `-{sequence}` suffix).
/// Runs for `--duration` seconds, or until SIGINT/SIGTERM with `--duration 0`; prints a JSON
/// summary every `--report-every` seconds and at the end (requests, bids, wins, spend in micros).
#[derive(Debug, Parser)]
#[command(name = "helios-exchange", version)]
struct Args {
    /// Bidder endpoint (repeat for several bidders).
    #[arg(long = "bidder", default_value = "http://127.0.0.1:8080/openrtb2/bid")]
    bidders: Vec<String>,
    /// Auctions (bid requests) per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds to run; 0 runs until SIGINT or SIGTERM.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Auction type: `first` (default), `second`, or `request` (follow each request's `at`).
    #[arg(long, value_enum, default_value_t = AuctionArg::First)]
    auction: AuctionArg,
    /// Second-price increment over the runner-up, CPM in currency units.
    #[arg(long, default_value_t = 0.01)]
    increment: f64,
    /// Share of wins whose ad renders and is billed (→ `burl`).
    #[arg(long, default_value_t = 0.95)]
    render_share: f64,
    /// Share of billed impressions that are clicked (→ the adm's click tracker, else
    /// `/notice/click` with the billing URL's query).
    #[arg(long, default_value_t = 0.02)]
    click_share: f64,
    /// Simulated rival bidders on an imp (they bid but get no notices).
    #[arg(long, default_value_t = 2)]
    rivals: u32,
    /// Share of imps the rivals bid on.
    #[arg(long, default_value_t = 0.5)]
    rival_share: f64,
    /// Highest rival bid, CPM in currency units (bids are uniform between floor and this).
    #[arg(long, default_value_t = 4.0)]
    rival_max_cpm: f64,
    /// Corpus file (JSON lines); without it requests are generated from `--seed`/`--users`.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Seed of generated requests and of the exchange's own draws (rivals, renders, clicks).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// User-id space of generated requests (indices 0 … users-1, Zipf-like).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Spelling of generated user ids: `plain` (`u{n}`) or `profiles` (the UUID-shaped ids
    /// `helios-profiles load --seed <profiles-seed>` writes, so bidders find the profiles).
    #[arg(long, value_enum, default_value_t = IdFormat::Plain)]
    user_ids: IdFormat,
    /// Seed of the helios-profiles data set (with `--user-ids profiles`).
    #[arg(long, default_value_t = 1)]
    profiles_seed: u64,
    /// Per-bidder timeout in ms; default: the request's `tmax`.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Auctions in flight at most; a due auction past it is skipped and counted (`shed`).
    #[arg(long, default_value_t = 2000)]
    max_inflight: usize,
    /// Notice calls in flight at most; past it a notice is dropped and counted.
    #[arg(long, default_value_t = 4000)]
    max_notices_inflight: usize,
    /// Idle keep-alive connections kept per host.
    #[arg(long, default_value_t = 64)]
    max_idle_per_host: usize,
    /// Seconds between progress summaries (JSON lines on stderr); 0 = only at the end.
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdFormat {
    Plain,
    Profiles,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuctionArg {
    First,
    Second,
    Request,
}

#[derive(Debug, Default, Clone, Serialize)]
struct BidderStats {
    url: String,
    /// 200 with a bid response.
    bids: u64,
    /// 204 (or 200 with no seatbid).
    nobids: u64,
    /// Other status, unreadable response, connection failure.
    errors: u64,
    timeouts: u64,
    /// Latency of answered requests, µs percentiles.
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct NoticeStats {
    sent: u64,
    /// 2xx answers.
    ok: u64,
    /// Non-2xx answers or failures.
    failed: u64,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    elapsed_s: f64,
    requests: u64,
    /// Due auctions skipped because `--max-inflight` were running.
    shed: u64,
    bidders: Vec<BidderStats>,
    #[serde(flatten)]
    tally: Tally,
    notices: BTreeMap<&'static str, NoticeStats>,
    notices_dropped: u64,
}

struct Shared {
    args: Args,
    bidders: Vec<HttpUrl>,
    rules: Rules,
    pool: Pool,
    corpus_lines: Vec<Vec<u8>>,
    corpus_cfg: CorpusConfig,
    summary: RefCell<Summary>,
    bidder_lat: RefCell<Vec<Recorder>>,
    inflight: Cell<usize>,
    notices_inflight: Cell<usize>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for (n, v) in [
        ("--render-share", a.render_share),
        ("--click-share", a.click_share),
        ("--rival-share", a.rival_share),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{n} must be in [0, 1]");
    }
    anyhow::ensure!(a.rate >= 1, "--rate must be at least 1");
    anyhow::ensure!(
        a.duration.is_finite() && a.duration >= 0.0,
        "--duration must be >= 0"
    );
    let bidders = a
        .bidders
        .iter()
        .map(|u| {
            http::parse_url(u).with_context(|| format!("--bidder {u}: need http://host:port/path"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpm =
        |v: f64, n: &str| Micros::from_f64(v).with_context(|| format!("{n} must be a price >= 0"));
    let rules = Rules {
        force: match a.auction {
            AuctionArg::First => Some(AuctionKind::FirstPrice),
            AuctionArg::Second => Some(AuctionKind::SecondPrice),
            AuctionArg::Request => None,
        },
        increment: cpm(a.increment, "--increment")?,
        render_share: a.render_share,
        click_share: a.click_share,
        rivals: Rivals {
            count: a.rivals,
            share: a.rival_share,
            max_cpm: cpm(a.rival_max_cpm, "--rival-max-cpm")?,
        },
    };
    let corpus_lines = match &a.corpus {
        None => Vec::new(),
        Some(p) => corpus::read_file(p, 0)?,
    };
    let summary = Summary {
        bidders: a
            .bidders
            .iter()
            .map(|u| BidderStats {
                url: u.clone(),
                ..BidderStats::default()
            })
            .collect(),
        ..Summary::default()
    };
    let shared = Rc::new(Shared {
        bidders,
        rules,
        pool: Pool::new(a.max_idle_per_host),
        corpus_lines,
        corpus_cfg: CorpusConfig {
            seed: a.seed,
            users: a.users,
            user_ids: match a.user_ids {
                IdFormat::Plain => UserIds::Plain,
                IdFormat::Profiles => UserIds::Profiles {
                    seed: a.profiles_seed,
                },
            },
            ..CorpusConfig::default()
        },
        summary: RefCell::new(summary),
        bidder_lat: RefCell::new(vec![Recorder::new(); a.bidders.len()]),
        inflight: Cell::new(0),
        notices_inflight: Cell::new(0),
        args: a,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(shared))
}

async fn drive(s: Rc<Shared>) -> anyhow::Result<()> {
    let start = Instant::now();
    let sched = Schedule::new(0, s.args.rate);
    let end = (s.args.duration > 0.0).then(|| Duration::from_secs_f64(s.args.duration));
    let mut stop = Box::pin(shutdown_signal());
    let mut tick = tokio::time::interval(
        Duration::from_millis(1).max(Duration::from_nanos(1_000_000_000 / s.args.rate)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0u64;
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let now = start.elapsed();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let due = sched.due_by(now.as_nanos() as u64);
        while next < due {
            if s.inflight.get() >= s.args.max_inflight {
                s.summary.borrow_mut().shed += 1;
            } else {
                s.inflight.set(s.inflight.get() + 1);
                tokio::task::spawn_local(auction(s.clone(), next));
            }
            next += 1;
        }
        if s.args.report_every > 0
            && last_report.elapsed() >= Duration::from_secs(s.args.report_every)
        {
            last_report = Instant::now();
            eprintln!("{}", serde_json::to_string(&snapshot(&s, start))?);
        }
    }
    // Let what is in flight finish (bounded).
    let drain_until = Instant::now() + Duration::from_secs(3);
    while (s.inflight.get() > 0 || s.notices_inflight.get() > 0) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sum = snapshot(&s, start);
    let text = serde_json::to_string_pretty(&sum)?;
    println!("{text}");
    if let Some(p) = &s.args.json {
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn snapshot(s: &Shared, start: Instant) -> Summary {
    let cur = s.summary.borrow();
    let lat = s.bidder_lat.borrow();
    Summary {
        elapsed_s: start.elapsed().as_secs_f64(),
        requests: cur.requests,
        shed: cur.shed,
        bidders: cur
            .bidders
            .iter()
            .zip(lat.iter())
            .map(|(b, l)| {
                let q = l.summary();
                BidderStats {
                    p50_us: q.p50_us,
                    p99_us: q.p99_us,
                    ..b.clone()
                }
            })
            .collect(),
        tally: cur.tally,
        notices: cur.notices.clone(),
        notices_dropped: cur.notices_dropped,
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The request body of auction `seq` and what settlement needs of it.
fn request_of(s: &Shared, seq: u64) -> Option<(String, Vec<ImpSlot>, Option<u32>, u32)> {
    let body = if s.corpus_lines.is_empty() {
        corpus::request(&s.corpus_cfg, seq)
    } else {
        let line = &s.corpus_lines[(seq % s.corpus_lines.len() as u64) as usize];
        let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let id = format!("{}-{seq}", v["id"].as_str().unwrap_or("r"));
        v["id"] = id.into();
        serde_json::to_string(&v).ok()?
    };
    let valid = codec::decode_valid(body.as_bytes()).ok()?;
    let imps = valid
        .req()
        .imp
        .iter()
        .zip(valid.imps())
        .map(|(imp, vi)| ImpSlot {
            id: imp.id.as_deref().unwrap_or_default().to_owned(),
            floor: vi.floor,
        })
        .collect();
    let at = valid.req().at;
    let tmax = valid.req().tmax.unwrap_or(200);
    drop(valid);
    Some((body, imps, at, tmax))
}

async fn auction(s: Rc<Shared>, seq: u64) {
    run_auction(&s, seq).await;
    s.inflight.set(s.inflight.get() - 1);
}

async fn run_auction(s: &Rc<Shared>, seq: u64) {
    let Some((body, imps, at, tmax)) = request_of(s, seq) else {
        return;
    };
    s.summary.borrow_mut().requests += 1;
    let timeout = Duration::from_millis(s.args.timeout_ms.unwrap_or(u64::from(tmax)));
    let mut handles = Vec::with_capacity(s.bidders.len());
    for (b, url) in s.bidders.iter().enumerate() {
        let req = http::render_request(
            "POST",
            &url.host_header,
            &url.target,
            Some("application/json"),
            body.as_bytes(),
        );
        let (s2, authority) = (s.clone(), url.authority.clone());
        handles.push(tokio::task::spawn_local(async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(timeout, s2.pool.request(&authority, &req)).await;
            (b, t0.elapsed(), r)
        }));
    }
    let mut answers: Vec<Option<BidResponse>> = vec![None; s.bidders.len()];
    for h in handles {
        let Ok((b, took, r)) = h.await else { continue };
        let mut sum = s.summary.borrow_mut();
        let st = &mut sum.bidders[b];
        match r {
            Err(_) => st.timeouts += 1,
            Ok(Err(_)) => st.errors += 1,
            Ok(Ok((status, resp_body))) => {
                s.bidder_lat.borrow_mut()[b].record(0, took.as_nanos() as u64);
                match status {
                    204 => st.nobids += 1,
                    200 => match serde_json::from_slice::<BidResponse>(&resp_body) {
                        Ok(r) if r.seatbid.iter().any(|sb| !sb.bid.is_empty()) => {
                            st.bids += 1;
                            answers[b] = Some(r);
                        }
                        Ok(_) => st.nobids += 1,
                        Err(_) => st.errors += 1,
                    },
                    _ => st.errors += 1,
                }
            }
        }
    }
    let mut rng = Rng::for_item(s.args.seed ^ 0x5EED_E8C4, seq);
    let mut notices = Vec::new();
    let request_id = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let tally = exchange::settle(
        &Auctioned {
            request_id: &request_id,
            at,
            currency: "USD",
            imps: &imps,
        },
        &answers,
        &s.rules,
        &mut rng,
        &mut notices,
    );
    s.summary.borrow_mut().tally.add(&tally);
    for n in notices {
        let kind = match n.kind {
            NoticeKind::Win => "win",
            NoticeKind::Billing => "billing",
            NoticeKind::Loss => "loss",
            NoticeKind::Click => "click",
        };
        if s.notices_inflight.get() >= s.args.max_notices_inflight {
            s.summary.borrow_mut().notices_dropped += 1;
            continue;
        }
        let Some(url) = http::parse_url(&n.url) else {
            let mut sum = s.summary.borrow_mut();
            let e = sum.notices.entry(kind).or_default();
            e.sent += 1;
            e.failed += 1;
            continue;
        };
        s.notices_inflight.set(s.notices_inflight.get() + 1);
        let s2 = s.clone();
        tokio::task::spawn_local(async move {
            let req = http::render_request("GET", &url.host_header, &url.target, None, b"");
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                s2.pool.request(&url.authority, &req),
            )
            .await;
            let ok = matches!(r, Ok(Ok((200..=299, _))));
            {
                let mut sum = s2.summary.borrow_mut();
                let e = sum.notices.entry(kind).or_default();
                e.sent += 1;
                if ok {
                    e.ok += 1;
                } else {
                    e.failed += 1;
                }
            }
            s2.notices_inflight.set(s2.notices_inflight.get() - 1);
        });
    }
}

/// Keep-alive connections per `host:port`, on this thread only.
struct Pool {
    idle: RefCell<HashMap<String, Vec<TcpStream>>>,
    max_idle: usize,
}

impl Pool {
    fn new(max_idle: usize) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
        }
    }

    /// Sends `req` and returns the status and (de-chunked) body. A pooled connection that turns
    /// out to be closed is replaced once.
    async fn request(&self, authority: &str, req: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let pooled = self.idle.borrow_mut().get_mut(authority).and_then(Vec::pop);
        if let Some(conn) = pooled {
            match exchange_once(conn, req).await {
                Ok((status, body, Some(conn))) => {
                    self.put(authority, conn);
                    return Ok((status, body));
                }
                Ok((status, body, None)) => return Ok((status, body)),
                Err(_) => {} // stale keep-alive connection: try a fresh one
            }
        }
        let conn = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        conn.set_nodelay(true)?;
        let (status, body, back) = exchange_once(conn, req).await?;
        if let Some(c) = back {
            self.put(authority, c);
        }
        Ok((status, body))
    }

    fn put(&self, authority: &str, conn: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        let v = idle.entry(authority.to_owned()).or_default();
        if v.len() < self.max_idle {
            v.push(conn);
        }
    }
}

/// One request/response on `conn`; gives the connection back unless the server closes it.
async fn exchange_once(
    mut conn: TcpStream,
    req: &[u8],
) -> anyhow::Result<(u16, Vec<u8>, Option<TcpStream>)> {
    conn.write_all(req).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before a full response");
        }
        buf.extend_from_slice(&chunk[..n]);
        match http::parse_response(&buf) {
            Ok(None) => continue,
            Err(e) => bail!("bad response: {e:?}"),
            Ok(Some(r)) => {
                let body = if r.chunked {
                    let mut out = Vec::new();
                    http::dechunk(&buf[r.body_start..r.body_end], &mut out)
                        .map_err(|e| anyhow::anyhow!("bad chunked body: {e:?}"))?;
                    out
                } else {
                    buf[r.body_start..r.body_end].to_vec()
                };
                let keep = !r.close && r.consumed == buf.len();
                return Ok((r.status, body, keep.then_some(conn)));
            }
        }
    }
}

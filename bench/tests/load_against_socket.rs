//! helios-load's engine against a tiny HTTP/1.1 server on a real loopback socket: counts of
//! requests served and answered agree, statuses are counted, a server that closes connections or
//! stalls shows up as reconnects and timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bench::load::{self, LoadConfig, Mode, Requests};

/// How the test server answers request number `n` (counted over all connections).
#[derive(Clone, Copy)]
enum Behaviour {
    /// `204` to everything.
    NoContent,
    /// `200` with a small JSON body, `Connection: close` every `close_every` requests.
    OkClosingEvery(u64),
    /// `204`, but request number `n` is never answered.
    SwallowNth(u64),
    /// `204` after sleeping this long (a server slower than the offered rate).
    SlowNoContent(Duration),
}

struct Server {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
}

fn serve(b: Behaviour) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let count = count.clone();
            std::thread::spawn(move || handle(s, b, &count));
        }
    });
    Server { addr, served }
}

fn handle(s: TcpStream, b: Behaviour, served: &AtomicU64) {
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        let out: Vec<u8> = match b {
            Behaviour::NoContent => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            Behaviour::SwallowNth(k) if n == k => continue,
            Behaviour::SwallowNth(_) => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            Behaviour::SlowNoContent(d) => {
                std::thread::sleep(d);
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
            }
            Behaviour::OkClosingEvery(k) => {
                let close = n.is_multiple_of(k);
                let body = br#"{"id":"x","seatbid":[]}"#;
                let mut o = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                    body.len(),
                    if close { "Connection: close\r\n" } else { "" }
                )
                .into_bytes();
                o.extend_from_slice(body);
                if w.write_all(&o).is_err() {
                    return;
                }
                if close {
                    return;
                }
                continue;
            }
        };
        if w.write_all(&out).is_err() {
            return;
        }
    }
}

fn cfg(addr: SocketAddr, mode: Mode) -> LoadConfig {
    LoadConfig {
        addr,
        connections: 4,
        mode,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        max_requests: None,
        timeout: Duration::from_secs(2),
        max_backlog: 100_000,
        max_reconnects: 1000,
        server_pid: Some(std::process::id()),
    }
}

fn requests() -> Requests {
    let bodies: Vec<String> = (0..20)
        .map(|i| bench::corpus::request(&bench::corpus::CorpusConfig::default(), i))
        .collect();
    Requests::post_json("test", "/openrtb2/bid", bodies.iter().map(|b| b.as_bytes()))
}

#[test]
fn closed_loop_stops_at_the_request_bound_and_counts_agree() {
    let srv = serve(Behaviour::NoContent);
    let mut c = cfg(srv.addr, Mode::Closed);
    c.max_requests = Some(3000);
    c.duration = Duration::from_secs(30);
    let r = load::run(&c, &requests()).expect("run");
    assert_eq!(r.completed, 3000);
    assert_eq!(r.sent, 3000);
    assert_eq!(r.statuses.get(&204), Some(&3000));
    assert_eq!(r.errors.failed(), 0, "{:?}", r.errors);
    assert_eq!(r.latency.count, 3000);
    // Everything the generator sent, warm-up included, reached the server exactly once.
    assert_eq!(
        srv.served.load(Ordering::SeqCst),
        r.completed + r.warmup_completed
    );
    assert!(r.server_cpu_us_per_req.is_some_and(|v| v > 0.0));
    assert!(r.generator_cpu_us_per_req > 0.0);
}

#[test]
fn open_loop_sends_the_offered_rate_and_survives_server_closes() {
    let srv = serve(Behaviour::OkClosingEvery(100));
    let c = cfg(srv.addr, Mode::Open { rate: 2000 });
    let r = load::run(&c, &requests()).expect("run");
    // 2 s at 2000/s: exactly the scheduled requests are sent and answered.
    assert_eq!(r.sent, 4000, "{r:?}");
    assert_eq!(r.completed, 4000, "{r:?}");
    assert_eq!(r.statuses.get(&200), Some(&4000));
    assert_eq!(r.errors.failed(), 0, "{:?}", r.errors);
    assert!(
        (r.achieved_rps - 2000.0).abs() < 100.0,
        "{}",
        r.achieved_rps
    );
    // One close per 100 requests, warm-up included: each one was replaced.
    let total = r.completed + r.warmup_completed;
    assert_eq!(r.reconnects, total / 100);
    assert_eq!(srv.served.load(Ordering::SeqCst), total);
}

#[test]
fn an_unanswered_request_is_a_timeout_and_the_run_goes_on() {
    let srv = serve(Behaviour::SwallowNth(1000));
    let mut c = cfg(srv.addr, Mode::Open { rate: 1000 });
    c.timeout = Duration::from_millis(300);
    let r = load::run(&c, &requests()).expect("run");
    assert_eq!(r.errors.timeout, 1, "{:?}", r.errors);
    assert_eq!(r.sent, 2000);
    assert_eq!(r.completed, 1999);
    assert!(r.reconnects >= 1);
}

#[test]
fn an_overloaded_server_sees_the_backlog_and_the_overflow_is_counted_exactly() {
    // 2 connections, each answered after 5 ms (≤ 400/s together), offered 2000/s with a
    // backlog of 8: most due requests find no connection and overflow.
    let srv = serve(Behaviour::SlowNoContent(Duration::from_millis(5)));
    let mut c = cfg(srv.addr, Mode::Open { rate: 2000 });
    c.connections = 2;
    c.warmup = Duration::ZERO;
    c.max_backlog = 8;
    let r = load::run(&c, &requests()).expect("run");
    // Every scheduled request is accounted for once: sent, dropped at the backlog, or still
    // waiting at the end — whether the generator woke for each due time or caught up later.
    assert_eq!(
        r.sent + r.errors.backlog_overflow + r.errors.unsent,
        4000,
        "{r:?}"
    );
    assert!(r.errors.backlog_overflow > 2000, "{:?}", r.errors);
    assert_eq!(r.completed, r.sent);
    assert!(r.completed <= 2 * 2 * 200 + 2, "{}", r.completed);
    // Latency counts from the intended time: at least the 5 ms service time.
    assert!(r.latency.p50_us >= 5000.0, "{:?}", r.latency);
    // Scheduler figures of the generator and the (in-process) server threads.
    assert!(r.generator_policy.starts_with("SCHED_"));
    assert!(
        r.generator_wait_util
            .is_none_or(|w| (0.0..=1.0).contains(&w))
    );
    assert!(!r.server_threads_cpu_util.is_empty());
}

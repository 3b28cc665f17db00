//! Shared helpers of the profile-cache integration tests: where the real Redis is (or why the
//! test is skipped), the tests' replica settings, a namespace of a test's own, a writer that
//! follows the documented contract, a preloaded data set, polling with a deadline, a TCP proxy
//! that can cut the replica off from Redis, and a private Redis server to restart.
#![allow(dead_code)]

pub mod v1_snapshot;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use profile_cache::{ReplicaConfig, keys};

/// The Redis URL from `HELIOS_REDIS_URL`, or `None` (test skipped) — unless
/// `HELIOS_REQUIRE_SERVICES=1`, in which case a missing Redis fails the test.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("HELIOS_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: HELIOS_REDIS_URL is not set but HELIOS_REQUIRE_SERVICES=1");
            }
            println!(
                "skipped: {test}: HELIOS_REDIS_URL not set (start Redis with scripts/services.sh)"
            );
            None
        }
    }
}

/// A namespace of its own for one test, so tests share one Redis without colliding.
pub fn namespace(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

/// The replica settings the tests share, for namespace `ns` of the Redis at `url`: 1,000
/// profiles expected, stale after 1 s, short blocking reads, timeouts and backoff.
pub fn test_config(url: &str, ns: &str) -> ReplicaConfig {
    ReplicaConfig {
        redis_url: url.into(),
        namespace: ns.into(),
        expected_profiles: 1000,
        max_staleness: Duration::from_secs(1),
        // SCAN walks the whole keyspace, not just the namespace: large steps keep the copy quick
        // when the Redis under test also holds other data.
        scan_batch: 1000,
        stream_batch: 100,
        block: Duration::from_millis(50),
        io_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// The namespace of `test` ([`namespace`]), emptied ([`clean`]), and a connection to `url`.
pub fn fresh_namespace(url: &str, test: &str) -> (String, redis::Connection) {
    let ns = namespace(test);
    let mut con = connect(url);
    clean(&mut con, &ns);
    (ns, con)
}

pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("test Redis reachable")
}

/// Deletes every key of a namespace.
pub fn clean(con: &mut redis::Connection, ns: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query(con)
        .expect("KEYS");
    for k in keys {
        let _: () = redis::cmd("DEL").arg(k).query(con).expect("DEL");
    }
}

/// Writes a profile the documented way: HSET the fields, then XADD the id to the change stream,
/// in one MULTI so the two cannot be separated.
pub fn write_profile(con: &mut redis::Connection, ns: &str, id: &str, fields: &[(&str, &str)]) {
    let mut p = redis::pipe();
    p.atomic();
    let mut h = redis::cmd("HSET");
    h.arg(keys::profile_key(ns, id));
    for (f, v) in fields {
        h.arg(*f).arg(*v);
    }
    p.add_command(h).ignore();
    p.cmd("XADD")
        .arg(keys::changes_stream(ns))
        .arg("*")
        .arg(keys::STREAM_FIELD)
        .arg(id)
        .ignore();
    let _: () = p.query(con).expect("HSET+XADD");
}

/// Deletes a profile the documented way: DEL, then XADD.
pub fn delete_profile(con: &mut redis::Connection, ns: &str, id: &str) {
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("DEL").arg(keys::profile_key(ns, id)).ignore();
    p.cmd("XADD")
        .arg(keys::changes_stream(ns))
        .arg("*")
        .arg(keys::STREAM_FIELD)
        .arg(id)
        .ignore();
    let _: () = p.query(con).expect("DEL+XADD");
}

/// Writes `n` profiles `u{i}` with the fields `fields(i)` straight into Redis (pipelined, no
/// stream entries: a preloaded data set as a data pipeline would leave it).
pub fn preload(
    con: &mut redis::Connection,
    ns: &str,
    n: u32,
    fields: impl Fn(u32) -> Vec<(&'static str, String)>,
) {
    let mut p = redis::pipe();
    for i in 0..n {
        let h = p.cmd("HSET").arg(keys::profile_key(ns, &format!("u{i}")));
        for (f, v) in fields(i) {
            h.arg(f).arg(v);
        }
        h.ignore();
    }
    let _: () = p.query(con).expect("preload");
}

/// Trims the change stream of `ns` to nothing: entries a replica that was away never reads.
pub fn trim_stream(con: &mut redis::Connection, ns: &str) {
    let _: () = redis::cmd("XTRIM")
        .arg(keys::changes_stream(ns))
        .arg("MAXLEN")
        .arg(0)
        .query(con)
        .expect("XTRIM");
}

/// Polls `f` until it holds or `secs` pass; panics with `what` on timeout.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

/// A TCP proxy in front of Redis that can be cut (every connection dropped, new ones refused
/// at once) and restored, to make Redis unreachable for the replica only.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("proxy addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (up2, stop2) = (Arc::clone(&up), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if up2.load(Ordering::Relaxed) => {
                        if let Ok(server) = TcpStream::connect(target) {
                            pump(client, server, Arc::clone(&up2));
                        }
                    }
                    Ok((client, _)) => drop(client),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, up, stop }
    }

    /// The proxy's URL for Redis database `db` (use the one the test writes to).
    pub fn url(&self, db: i64) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::Relaxed);
        // Pumps notice within their 20 ms read timeout.
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
    }
}

fn pump(a: TcpStream, b: TcpStream, up: Arc<AtomicBool>) {
    for (mut from, mut to) in [
        (
            a.try_clone().expect("clone socket"),
            b.try_clone().expect("clone socket"),
        ),
        (b, a),
    ] {
        let up = Arc::clone(&up);
        std::thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("read timeout");
            let mut buf = vec![0u8; 64 * 1024];
            while up.load(Ordering::Relaxed) {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// A Redis server of the test's own (append-only, fsync always) that it can stop and restart on
/// the same port and data directory. Killed by PID on drop.
pub struct OwnRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port, or `None` if `redis-server` is not installed (skip).
    pub fn start(test: &str) -> Option<OwnRedis> {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("helios-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        if !r.spawn() {
            if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: redis-server cannot be started but HELIOS_REQUIRE_SERVICES=1");
            }
            println!("skipped: {test}: redis-server not installed");
            return None;
        }
        Some(r)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(mut c) = redis::Client::open(self.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGTERM, then wait).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on the PID of the child this struct spawned and still owns.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server restarts");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

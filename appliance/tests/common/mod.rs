//! Helpers for the integration tests: start the real `helios` binary on loopback (ephemeral
//! ports, read back from its "listening" log line), speak raw HTTP/1.1 to it, read its metrics.
//! The appliance needs no external service, so nothing here is ever skipped.

#![allow(dead_code)]
// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

pub mod kinds;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CAMPAIGNS: &str = r#"{"version":1,"campaigns":[
  {"id":7,"advertiser_id":70,"status":"active","bid_cpm_micros":2500000,"total_budget_micros":1000000000,
   "creatives":[{"id":71,"format":{"type":"banner","w":300,"h":250},"adomain":["shoes.example"],"adm":"<a>ad</a>"}]}]}"#;

pub const BID: &str = r#"{"id":"req-1","imp":[{"id":"i1","banner":{"w":300,"h":250}}],"tmax":500}"#;
pub const NOBID: &str =
    r#"{"id":"req-2","imp":[{"id":"i1","banner":{"w":728,"h":90}}],"tmax":500}"#;

pub fn post(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub struct Server {
    pub child: Child,
    pub bid: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: std::path::PathBuf,
}

fn tmpdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "helios-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Server {
    /// Starts `helios --driver <driver>` with the test campaigns plus `args` and `env`, and
    /// waits until `/readyz` answers 200.
    pub fn start(driver: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_opts(driver, args, env, false)
    }

    /// Like [`Server::start`]; with `block_io_uring`, the process runs under a seccomp filter
    /// that answers `io_uring_setup` with ENOSYS, as container runtimes' default profiles do.
    pub fn start_opts(
        driver: &str,
        args: &[&str],
        env: &[(&str, &str)],
        block_io_uring: bool,
    ) -> Server {
        Server::start_full(driver, CAMPAIGNS, args, env, block_io_uring)
    }

    /// Like [`Server::start`] with another campaign file (JSON text).
    pub fn start_with_campaigns(
        driver: &str,
        campaigns: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_full(driver, campaigns, args, env, false)
    }

    fn start_full(
        driver: &str,
        campaigns_json: &str,
        args: &[&str],
        env: &[(&str, &str)],
        block_io_uring: bool,
    ) -> Server {
        let dir = tmpdir();
        let campaigns = dir.join("campaigns.json");
        std::fs::write(&campaigns, campaigns_json).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_helios"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--driver",
            driver,
            "--campaigns",
            campaigns.to_str().unwrap(),
        ])
        .args(args)
        .env("HELIOS_ADMIN_PUBLISH_MS", "20")
        // Events to Kafka are tested on their own (tests/events.rs); here they are counted only.
        .env("HELIOS_EVENTS_ENABLED", "false")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if block_io_uring {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure only makes two prctl calls (async-signal-safe) in the child.
            unsafe {
                cmd.pre_exec(seccomp_block_io_uring);
            }
        }
        let mut child = cmd.spawn().expect("helios starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("\"listening\"") {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let f = &v["fields"];
                        let _ = tx.send((
                            f["bid"].as_str().unwrap().parse::<SocketAddr>().unwrap(),
                            f["admin"].as_str().unwrap().parse::<SocketAddr>().unwrap(),
                        ));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let (bid, admin) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("helios did not start: {:?}", log.lock().unwrap());
            }
        };
        let s = Server {
            child,
            bid,
            admin,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        while s.admin_get("/readyz").0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(20), "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.bid)
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let Ok(mut c) = TcpStream::connect(self.admin) else {
            return (0, String::new());
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        let code = s
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = s
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_owned();
        (code, body)
    }

    /// Values of a metric (exact series text before the value, e.g.
    /// `helios_bids_total{core="0"}`), summed when `name` is a prefix of several lines.
    pub fn metric_sum(&self, prefix: &str) -> u64 {
        let (_, m) = self.admin_get("/metrics");
        m.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Sum of the lines of metric `name` whose labels contain `labels` (e.g. `reason="x"`).
    pub fn metric_with(&self, name: &str, labels: &str) -> u64 {
        let (_, m) = self.admin_get("/metrics");
        m.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The metric sum once published: polls until `ok(value)` holds (cores publish every
    /// `admin.publish_ms`), at most 5 s; returns the last value read.
    pub fn metric_when(&self, prefix: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let t0 = Instant::now();
        loop {
            let v = self.metric_sum(prefix);
            if ok(v) || t0.elapsed() > Duration::from_secs(5) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The metric sum once it equals `want` (or the last value after 5 s).
    pub fn metric_eq(&self, prefix: &str, want: u64) -> u64 {
        self.metric_when(prefix, |v| v == want)
    }

    /// Per-core values of a metric named `name` (labels only `core`).
    pub fn per_core(&self, name: &str) -> Vec<(String, u64)> {
        let (_, m) = self.admin_get("/metrics");
        m.lines()
            .filter(|l| l.starts_with(&format!("{name}{{core=")))
            .map(|l| {
                let core = l.split('"').nth(1).unwrap().to_owned();
                (core, l.rsplit(' ').next().unwrap().parse().unwrap())
            })
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGSTOP and waits until the kernel reports the whole process stopped (a signal is
    /// delivered asynchronously: on a busy machine the server could still read what is sent
    /// right after `kill` returns).
    pub fn stop_and_wait(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.id();
        let t0 = Instant::now();
        loop {
            let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .ok()
                            .and_then(|st| st.rsplit(") ").next().map(|r| r.starts_with('T')))
                            .unwrap_or(true)
                    })
                })
                .unwrap_or(false);
            if stopped {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "server did not stop within 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < within, "helios did not exit in {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_contains(&self, s: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(s))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn closes(&self) -> bool {
        self.head.to_ascii_lowercase().contains("connection: close")
    }
}

pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("sends");
    }

    /// Reads one response (interim 100 responses included as responses of their own).
    pub fn recv(&mut self) -> Resp {
        loop {
            if let Some((r, n)) = parse(&self.buf) {
                self.buf.drain(..n);
                return r;
            }
            let mut tmp = [0u8; 16 * 1024];
            let n = self.s.read(&mut tmp).expect("reads a response");
            assert!(
                n > 0,
                "connection closed before a response; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// True when the server closes the connection (EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 4096];
        let r = loop {
            match self.s.read(&mut tmp) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        };
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        r
    }

    pub fn roundtrip(&mut self, b: &[u8]) -> Resp {
        self.send(b);
        self.recv()
    }
}

fn parse(b: &[u8]) -> Option<(Resp, usize)> {
    let mut h = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut h);
    let n = match r.parse(b).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let len = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .unwrap_or(0);
    if b.len() < n + len {
        return None;
    }
    Some((
        Resp {
            status: r.code.unwrap(),
            head: String::from_utf8_lossy(&b[..n]).into_owned(),
            body: b[n..n + len].to_vec(),
        },
        n + len,
    ))
}

/// Settings for events on with no broker: nothing listens on port 1, so the pipeline starts in
/// spool mode and spools into `spool` (read back by the test); short start-up and shutdown waits.
pub fn spool_only_events(spool: &str) -> [(&'static str, &str); 5] {
    [
        ("HELIOS_EVENTS_ENABLED", "true"),
        ("HELIOS_EVENTS_BROKERS", "127.0.0.1:1"),
        ("HELIOS_EVENTS_STARTUP_TIMEOUT_MS", "200"),
        ("HELIOS_EVENTS_SHUTDOWN_TIMEOUT_MS", "500"),
        ("HELIOS_EVENTS_SPOOL_DIR", spool),
    ]
}

/// Polls `f` until it returns true, at most 5 s.
pub fn eventually(f: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Installs a seccomp filter making `io_uring_setup` fail with ENOSYS (in the calling process).
fn seccomp_block_io_uring() -> std::io::Result<()> {
    const SYS_IO_URING_SETUP: u32 = 425;
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut filter = [
        // A = seccomp_data.nr
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            SYS_IO_URING_SETUP,
        ),
        ins(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls with a valid, live filter program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// (thread name → (Cpus_allowed_list, scheduling policy, nice)) of every thread of `pid`.
pub fn thread_placement(pid: u32) -> std::collections::BTreeMap<String, (String, i32, i32)> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let p = t.unwrap().path();
        let Ok(name) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        let Ok(sched) = std::fs::read_to_string(p.join("sched")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        let policy: i32 = sched
            .lines()
            .find_map(|l| l.strip_prefix("policy"))
            .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse().ok())
            .unwrap();
        // stat: "pid (comm) state …": nice is field 19, the 17th after the comm.
        let nice: i32 = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        out.insert(name.trim().to_owned(), (cpus, policy, nice));
    }
    out
}

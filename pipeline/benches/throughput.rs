//! Throughput of the outcome pipeline: events/s from one core's queue through the producer
//! thread into a Tansu broker it starts itself — memory engine and SQLite engine, one after the
//! other — for a matrix of producer settings; with CPU per event of the pipeline's threads and
//! of the broker. Run: `cargo bench -p helios-pipeline --bench throughput` (see
//! bench/RESULTS.md). Environment: `HELIOS_TANSU` (broker binary), `HELIOS_BENCH_EVENTS`
//! (default 500000), `HELIOS_BENCH_LINGER` (`0,5,20`), `HELIOS_BENCH_COMPRESSION` (`lz4,none`; zstd is not in this rdkafka build),
//! `HELIOS_BENCH_ENGINES` (`memory,sqlite`), `HELIOS_BENCH_FRAME_EVENTS` (most events per Kafka
//! record, `65535,1`: frames against one event per record, side by side), `HELIOS_BENCH_JOURNAL`
//! (`on,off`: each core's write-ahead journal on — 16 MiB, the default — or off, side by side).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codec::event::{Event, EventKind, InlineStr};
use pipeline::{Pipeline, PipelineConfig};

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cpu_of_pid(pid: u32) -> Duration {
    // utime + stime (fields 14, 15) in clock ticks.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(who, &mut r) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(bin: &Path, dir: &Path, engine: &str) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log")).expect("log");
        let child = Command::new(bin)
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", engine])
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    engine: String,
    linger: u32,
    compression: String,
    events: u64,
    secs: f64,
    pipeline_cpu_ns: f64,
    broker_cpu_ns: f64,
    spooled: u64,
    overflowed: u64,
    frame_events: u16,
    journal: bool,
    journal_full: u64,
}

fn run(
    brokers: &str,
    broker_pid: u32,
    tag: &str,
    (linger, compression, frame_events, journal): (u32, &str, u16, bool),
    n: u64,
) -> Row {
    let spool = std::env::temp_dir().join(format!("helios-bench-spool-{tag}"));
    let _ = std::fs::remove_dir_all(&spool);
    let mut cfg = PipelineConfig {
        brokers: brokers.to_string(),
        node: "bench".into(),
        spool_dir: spool.clone(),
        queue_capacity_per_core: 65_536,
        topic_bids: format!("{tag}.bids"),
        topic_outcomes: format!("{tag}.outcomes"),
        ..PipelineConfig::default()
    };
    cfg.producer.linger_ms = linger;
    cfg.producer.compression = compression.to_string();
    if let Some(us) = std::env::var("HELIOS_BENCH_IDLE_SLEEP_MAX_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.idle_sleep_max_us = us;
    }
    cfg.frame_max_events = frame_events;
    if !journal {
        cfg.journal_bytes_per_core = 0;
    }
    if frame_events == 1 {
        // One event per record, as schema 1 did: give librdkafka the queue bound it had then
        // (200,000 records; the default of 4,096 is sized for frames).
        cfg.producer.max_in_flight_messages = 200_000;
    }
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one sink");
    let mut e = Event::new(EventKind::Bid);
    e.node = InlineStr::new("bench-node");
    e.exchange = InlineStr::new("adx");
    e.request_id = InlineStr::new("0f8fad5b-d9cb-469f-a165-70867728950e");
    e.imp_id = InlineStr::new("1");
    e.site_or_app = InlineStr::new("news.example.com");
    e.currency = *b"USD";
    e.country = *b"USA";
    e.bid_price_micros = 1_250_000;
    let cpu0 = rusage(libc::RUSAGE_SELF);
    let main0 = rusage(libc::RUSAGE_THREAD);
    let broker0 = cpu_of_pid(broker_pid);
    let t0 = Instant::now();
    for i in 0..n {
        e.event_id[..8].copy_from_slice(&i.to_le_bytes());
        e.campaign_id = 1 + (i % 100) as u32;
        e.ts_unix_ns = i;
        while !s.try_emit(&e) {
            std::thread::yield_now();
        }
    }
    let main_cpu = rusage(libc::RUSAGE_THREAD) - main0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while p.metrics().produced < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = rusage(libc::RUSAGE_SELF) - cpu0;
    let broker_cpu = cpu_of_pid(broker_pid) - broker0;
    let m = p.metrics();
    drop(s);
    p.shutdown(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&spool);
    // The emitting thread only pushes (and yields when the queue is full): not pipeline cost.
    let pipeline_cpu = cpu.saturating_sub(main_cpu);
    Row {
        engine: String::new(),
        linger,
        compression: compression.to_string(),
        frame_events,
        events: m.produced,
        secs,
        pipeline_cpu_ns: pipeline_cpu.as_nanos() as f64 / n as f64,
        broker_cpu_ns: broker_cpu.as_nanos() as f64 / n as f64,
        spooled: m.spooled,
        overflowed: m.overflowed,
        journal,
        journal_full: m.journal_full,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: u64 = std::env::var("HELIOS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let bin = std::env::var("HELIOS_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/helios/tools/bin/tansu"));
    if !bin.is_file() {
        println!(
            "skipped: tansu not found at {} (HELIOS_TANSU)",
            bin.display()
        );
        return;
    }
    let lingers: Vec<u32> = env_list("HELIOS_BENCH_LINGER", "0,5,20")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    let compressions = env_list("HELIOS_BENCH_COMPRESSION", "lz4,none");
    let engines = env_list("HELIOS_BENCH_ENGINES", "memory,sqlite");
    let frame_events: Vec<u16> = env_list("HELIOS_BENCH_FRAME_EVENTS", "65535,1")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    let journals: Vec<bool> = env_list("HELIOS_BENCH_JOURNAL", "on,off")
        .iter()
        .map(|v| v == "on")
        .collect();
    let mut sample = Event::new(EventKind::Bid);
    sample.request_id = InlineStr::new("0f8fad5b-d9cb-469f-a165-70867728950e");
    println!(
        "events per run: {n}; compact event ≈ {} B (schema 1 rkyv: {} B)",
        sample.encoded_len() + 16,
        sample.to_legacy_bytes().len()
    );
    let mut rows = Vec::new();
    for engine in &engines {
        let url = match engine.as_str() {
            "memory" => "memory://tansu/",
            "sqlite" => "sqlite://tansu.db",
            other => panic!("unknown engine {other}"),
        };
        let dir = std::env::temp_dir().join(format!(
            "helios-bench-tansu-{engine}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let broker = Broker::start(&bin, &dir, url);
        let brokers = format!("127.0.0.1:{}", broker.port);
        for &linger in &lingers {
            for c in &compressions {
                for &fe in &frame_events {
                    for &j in &journals {
                        let tag = format!(
                            "bench-{engine}-{linger}-{c}-{fe}-{}-{}",
                            if j { "j" } else { "nj" },
                            std::process::id()
                        );
                        let mut r = run(&brokers, broker.child.id(), &tag, (linger, c, fe, j), n);
                        r.engine = engine.clone();
                        println!(
                            "{:7} linger {:3} ms {:5} ≤{:5} ev/record journal {:3}: {:>9.0} events/s  pipeline CPU {:>6.0} ns/event  broker CPU {:>7.0} ns/event  (acked {}, spooled {}, overflowed {}, journal full {})",
                            r.engine,
                            r.linger,
                            r.compression,
                            r.frame_events,
                            if r.journal { "on" } else { "off" },
                            r.events as f64 / r.secs,
                            r.pipeline_cpu_ns,
                            r.broker_cpu_ns,
                            r.events,
                            r.spooled,
                            r.overflowed,
                            r.journal_full
                        );
                        rows.push(r);
                    }
                }
            }
        }
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "\n| engine | linger.ms | compression | events/record ≤ | journal | events/s | pipeline CPU ns/event | broker CPU ns/event |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            r.engine,
            r.linger,
            r.compression,
            r.frame_events,
            if r.journal { "on" } else { "off" },
            r.events as f64 / r.secs,
            r.pipeline_cpu_ns,
            r.broker_cpu_ns
        );
    }
}

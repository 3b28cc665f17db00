//! The configuration: one TOML file with every setting, each overridable by an environment
//! variable `HELIOS_<SECTION>_<KEY>` (e.g. `HELIOS_HTTP_MAX_BODY_BYTES`), the common ones also by
//! command-line flags. Precedence: defaults < file < environment < flags.
//!
//! Read once at start-up on the main thread. Every error names the key it is about
//! ([`ConfigError`]); the binary prints it and exits with code 2. Must never: be read on the
//! request path (cores get a [`crate::core::CoreConfig`] copy).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which event loop carries the sans-IO core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// io_uring completion loop (falls back to epoll, logged, when the ring cannot be set up).
    Uring,
    /// A tokio `current_thread` runtime (epoll) per core.
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Bid port address.
    pub listen: String,
    /// CPUs to run event loops on: "all" (every CPU the process may use) or a list "0-1,3".
    pub cores: String,
    pub driver: Driver,
    /// Answer every bid request 204 without bidding (ceiling of the HTTP stack).
    pub null: bool,
    /// Node name in events and logs ("" = the host name).
    pub node: String,
    pub listen_backlog: u32,
    pub max_connections_per_core: u32,
    /// Graceful shutdown: longest wait for in-flight requests, ms.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub max_header_bytes: usize,
    /// Body limit as sent (before gzip inflation).
    pub max_body_bytes: usize,
    /// Body limit after gzip inflation.
    pub max_inflated_body_bytes: usize,
    /// A keep-alive connection with no request in progress is closed after this, ms.
    pub idle_timeout_ms: u64,
    /// A request must arrive completely within this from its first byte, ms (else 408).
    pub slow_client_timeout_ms: u64,
    /// After answering with `Connection: close`, how long to read and discard what the client
    /// still sends before closing, ms.
    pub linger_ms: u64,
    /// Pending output per connection past which further pipelined requests wait.
    pub out_high_water_bytes: usize,
    /// Initial capacity of each connection's input and output buffers.
    pub conn_buffer_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bidding {
    /// Campaigns file (JSON, see docs/CAMPAIGNS.md); "" = no campaigns (every request no-bids).
    pub campaigns: String,
    /// Redis holding the live campaign set (`helios:campaigns`, published by the reporter's
    /// campaign management); "" = off. When set, the node is ready once every core runs a set
    /// from Redis, and later sets are installed live.
    pub campaigns_redis_url: String,
    /// `tmax` assumed when a request has none, ms.
    pub default_tmax_ms: u32,
    /// Subtracted from `tmax` for the network, ms.
    pub network_margin_ms: u32,
    /// Standing-queue shedding (CoDel-like, docs/ARCHITECTURE.md "Overload"): when even the
    /// freshest bid request of a whole `shed_interval_ms` had waited (since the kernel received
    /// it) more than this share of its budget (`tmax − network_margin_ms`), percent, the next
    /// interval answers every request older than that share 204 `overloaded` before decoding
    /// it. 0 = off (requests already past their deadline are still shed, 204 `deadline`).
    pub shed_queue_pct: u32,
    /// Queueing target of standing-queue shedding, µs: a request's target is this or
    /// `shed_queue_pct` of its budget, whichever is smaller (0 = the share alone). The default,
    /// 5 ms (CoDel's), makes a core that cannot keep up shed most of what it reads at once,
    /// so that it answers as many requests as it can; a node that would rather decide more and
    /// answer fewer under overload raises it.
    pub queue_target_us: u64,
    /// Window over which a standing queue is judged, ms.
    pub shed_interval_ms: u64,
    /// Count each bid request's age from the kernel's receive stamp (`SO_TIMESTAMPNS`; the
    /// io_uring driver receives with a `RECVMSG` multishot, the epoll driver with `recvmsg`)
    /// rather than from the loop turn that reads it, so time queued in the socket buffers
    /// counts against the deadline. false: plain `RECV` multishot / `read`, age from the read.
    pub rx_timestamps: bool,
    /// Time a loop turn may spend before its remaining bid requests are answered 204
    /// `overloaded` at once, µs (0 = no time bound). Under overload this keeps each turn short, so
    /// the requests it accepts are answered within about this bound and the rest cheaply.
    pub turn_budget_us: u64,
    /// Seat in bid responses (checked against `wseat`).
    pub seat: String,
    /// Our IAB Global Vendor List id: TCF v2 vendor consent is checked for it.
    pub vendor_id: u16,
    /// Exchanges allowed to ask for the decision trace (comma-separated names as in
    /// `/openrtb2/bid/{exchange}` or the gateway's `X-Helios-Exchange`; `*` = any; "" = none).
    /// A request from one of them with `X-Helios-Trace: 1` or `"test": 1` is answered with the
    /// trace in the response's `ext.helios_trace` (200 even when no campaign bids).
    pub trace_exchanges: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Admin port address (metrics, health, config). Keep it on loopback.
    pub listen: String,
    /// How often each core publishes its metrics for the admin thread, ms.
    pub publish_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Uring {
    /// Submission queue entries per core.
    pub ring_entries: u32,
    /// Provided receive buffers per core (power of two).
    pub buffers: u32,
    /// Bytes per provided receive buffer.
    pub buffer_bytes: u32,
    /// Loop timer period (timeouts, metrics, shutdown checks), ms.
    pub tick_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Send events to Kafka through the pipeline. false: events are counted and discarded
    /// (benchmarks of the bidding path alone).
    pub enabled: bool,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Disk spool for when the broker is away.
    pub spool_dir: String,
    /// Bound of the spool on disk.
    pub spool_max_bytes: u64,
    /// Events each core's queue holds before overflowing to the spool.
    pub queue_capacity_per_core: usize,
    /// At shutdown, how long to wait for the broker's acknowledgements before spooling.
    pub shutdown_timeout_ms: u64,
    /// At start, how long to wait for the broker (topic creation) before running on the spool.
    pub startup_timeout_ms: u64,
    /// Redis URL where billing notices increment frequency counters ("" = off).
    pub frequency_redis_url: String,
    /// Largest Kafka record: a frame of compact events (docs/EVENTS.md), 1024..=61440 bytes.
    pub frame_max_bytes: usize,
    /// A frame that is not full is sent this long after its first event (ms): the bound on an
    /// event's wait in the producer; longer means fewer, fuller Kafka records at low rates.
    pub frame_linger_ms: u64,
    /// Bytes of each core's write-ahead journal (memory-mapped file in spool_dir; a multiple
    /// of 4096, 65536..=4294967296; 0 = off). Every event is in it before its answer leaves,
    /// until Kafka or the spool has it, so SIGKILL loses no answered event (not power loss).
    /// Full → events go to the spool instead (helios_pipeline_journal_full_total).
    pub journal_bytes_per_core: u64,
    /// Longest park of the producer thread between turns, µs (it parks until its next frame is
    /// due; a core whose queue passes a quarter of its capacity wakes it early). Larger means
    /// fewer wake-ups of a helper; above 5 ms the producer's peak throughput falls
    /// (bench/RESULTS.md "Outcome pipeline", session 3).
    pub idle_sleep_max_us: u64,
    /// Extra librdkafka producer settings, `key=value` pairs separated by commas, applied last
    /// (e.g. "linger.ms=20"); "" = none. Helios' own defaults are in docs/EVENTS.md.
    pub librdkafka: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notices {
    /// HMAC key signing our notice URLs (set it through HELIOS_NOTICES_KEY). "" = a random key
    /// per process: notices for bids of an earlier process are then rejected.
    pub key: String,
    /// Scheme, host and port exchanges reach the notice routes at ("" = http://<server.listen>).
    pub base_url: String,
    /// Notices later than this after the bid are accepted but flagged late, seconds.
    pub late_window_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profiles {
    /// Redis holding the user profiles ("" = no profile cache: contextual bidding only).
    pub redis_url: String,
    /// Key namespace (`helios` → `helios:profile:{id}`).
    pub namespace: String,
    /// Profiles expected (sizes the replica up front).
    pub expected_profiles: usize,
    /// Replica staleness past which bidding uses no personal data, ms.
    pub max_staleness_ms: u64,
    /// On-disk snapshot of the replica for fast restarts ("" = none: a restart copies every
    /// profile from Redis). Its directory must exist.
    pub snapshot_path: String,
    /// How often the snapshot is rewritten while running (also after each full copy and at stop), s.
    pub snapshot_interval_s: u64,
    /// SCHED_FIFO priority of the replicator thread while it follows the change stream (0 = normal
    /// scheduling; 1–99 needs CAP_SYS_NICE): keeps the replication lag low on busy CPUs.
    pub replica_fifo_priority: u8,
}

/// TLS of the connections the node opens (to Redis). A `rediss://` URL in `profiles.redis_url`,
/// `bidding.campaigns_redis_url` or `events.frequency_redis_url` is TLS: the server's certificate
/// is verified (chain and hostname), never skipped; a failed verification is a connection error,
/// retried and logged, never a fall-back to plain text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM file of the CA certificate(s) that verify the Redis servers of `rediss://` URLs
    /// ("" = the system's trust store, /etc/ssl/certs).
    pub redis_ca_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// tracing filter: "info", "debug", "helios=debug,warn", …
    pub level: String,
}

/// Where and how the helper threads run: every thread but the bidding cores' event loops (the
/// pipeline's producer and librdkafka's threads, the frequency worker, the control thread, the
/// profile replicator, the admin thread, main). See docs/ARCHITECTURE.md "Threads and cores".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Threads {
    /// CPUs helper threads may run on: "auto" (the CPUs this process may use that no bidding
    /// core runs on; all of them when every CPU runs a core, e.g. `--cores all`), "all", or a
    /// list like "0" or "0,2-3".
    pub helper_cpus: String,
    /// Scheduling policy of helper threads: "batch" (SCHED_BATCH: a waking helper never
    /// preempts a running event loop, it runs when the loop sleeps or at the next scheduler
    /// tick) or "normal" (SCHED_OTHER).
    pub helper_policy: crate::threads::HelperPolicy,
    /// Nice value of helper threads, 0..=19 (higher: a smaller share of a CPU they contend
    /// for with an event loop; the profile replicator's lag grows with it on busy CPUs).
    pub helper_nice: i32,
}

impl Default for Threads {
    fn default() -> Self {
        Threads {
            helper_cpus: "auto".into(),
            helper_policy: crate::threads::HelperPolicy::Batch,
            helper_nice: 0,
        }
    }
}

/// Campaign budgets (leases, pacing): see docs/CAMPAIGNS.md "Budgets".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Enforce budgets and pacing: a core bids only while its lease covers the bid; billing
    /// notices spend, loss notices and expiry release. Off only for benchmarks or demos.
    pub enforce: bool,
    /// Redis holding the budgets (shared by every node); "" = `bidding.campaigns_redis_url`.
    /// When both are "", budgets are kept in this process, seeded from the campaigns file, and
    /// hold per node only.
    pub redis_url: String,
    /// A lease not renewed for this long returns to the campaign's budget (a dead node's money
    /// comes back), ms. Cores renew every quarter of it.
    pub lease_ttl_ms: u64,
    /// A campaign with no bid opportunity on a core for this long gives that core's lease back
    /// to the shared budget (other cores and nodes can spend it), ms.
    pub idle_return_ms: u64,
    /// Nodes bidding for the same campaigns: each core paces to a daily budget of
    /// daily_budget_micros / (cores × nodes). The total budget is shared through the store and
    /// needs no such split.
    pub nodes: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            enforce: true,
            redis_url: String::new(),
            lease_ttl_ms: 60_000,
            idle_return_ms: 10_000,
            nodes: 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub http: Http,
    pub bidding: Bidding,
    pub admin: Admin,
    pub uring: Uring,
    pub events: Events,
    pub notices: Notices,
    pub profiles: Profiles,
    pub tls: Tls,
    pub log: Log,
    pub budget: Budget,
    pub threads: Threads,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "0.0.0.0:8080".into(),
            cores: "all".into(),
            driver: Driver::Uring,
            null: false,
            node: String::new(),
            listen_backlog: 1024,
            max_connections_per_core: 4096,
            drain_timeout_ms: 5000,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            max_inflated_body_bytes: 256 * 1024,
            idle_timeout_ms: 60_000,
            slow_client_timeout_ms: 5_000,
            linger_ms: 1_000,
            out_high_water_bytes: 256 * 1024,
            conn_buffer_bytes: 16 * 1024,
        }
    }
}

impl Default for Bidding {
    fn default() -> Self {
        Bidding {
            campaigns: String::new(),
            campaigns_redis_url: String::new(),
            default_tmax_ms: 100,
            network_margin_ms: 20,
            shed_queue_pct: 25,
            queue_target_us: 5_000,
            shed_interval_ms: 100,
            rx_timestamps: true,
            turn_budget_us: 5_000,
            seat: "helios".into(),
            vendor_id: 1,
            trace_exchanges: String::new(),
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:9100".into(),
            publish_ms: 250,
        }
    }
}

impl Default for Uring {
    fn default() -> Self {
        Uring {
            ring_entries: 1024,
            buffers: 256,
            buffer_bytes: 4096,
            tick_ms: 50,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            enabled: true,
            brokers: "127.0.0.1:9092".into(),
            spool_dir: "/var/cache/helios/spool".into(),
            spool_max_bytes: 1 << 30,
            queue_capacity_per_core: 16_384,
            shutdown_timeout_ms: 5_000,
            startup_timeout_ms: 5_000,
            frequency_redis_url: String::new(),
            frame_max_bytes: pipeline::PipelineConfig::default().frame_max_bytes,
            frame_linger_ms: pipeline::PipelineConfig::default().frame_linger_ms,
            journal_bytes_per_core: pipeline::PipelineConfig::default().journal_bytes_per_core,
            idle_sleep_max_us: pipeline::PipelineConfig::default().idle_sleep_max_us,
            librdkafka: String::new(),
        }
    }
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            key: String::new(),
            base_url: String::new(),
            late_window_s: 3600,
        }
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles {
            redis_url: String::new(),
            namespace: "helios".into(),
            expected_profiles: 1_000_000,
            max_staleness_ms: 30_000,
            snapshot_path: String::new(),
            snapshot_interval_s: 300,
            replica_fifo_priority: 0,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("config key {key}: {msg}")]
    Key { key: String, msg: String },
}

fn key_err(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        msg: msg.into(),
    }
}

/// Sets `section.key` in `table` from the string `raw`, keeping the type the key has.
fn set_from_str(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let name = format!("{section}.{key}");
    let sec = table
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| key_err(&name, "unknown section"))?;
    let slot = sec
        .get_mut(key)
        .ok_or_else(|| key_err(&name, "unknown key"))?;
    let v = match slot {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| {
            key_err(
                &name,
                format!("expected an integer, got {raw:?} ({origin})"),
            )
        })?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                return Err(key_err(
                    &name,
                    format!("expected true or false, got {raw:?} ({origin})"),
                ));
            }
        }),
        _ => toml::Value::String(raw.to_owned()),
    };
    *slot = v;
    Ok(())
}

/// Overlays `file` on `base`, refusing unknown sections and keys and type mismatches.
fn overlay(base: &mut toml::Table, file: toml::Table) -> Result<(), ConfigError> {
    for (section, v) in file {
        let Some(dst) = base.get_mut(&section).and_then(toml::Value::as_table_mut) else {
            return Err(key_err(&section, "unknown section"));
        };
        let toml::Value::Table(src) = v else {
            return Err(key_err(&section, "expected a table"));
        };
        for (k, v) in src {
            let name = format!("{section}.{k}");
            let Some(slot) = dst.get_mut(&k) else {
                return Err(key_err(&name, "unknown key"));
            };
            if std::mem::discriminant(slot) != std::mem::discriminant(&v) {
                return Err(key_err(
                    &name,
                    format!("expected {}, got {}", slot.type_str(), v.type_str()),
                ));
            }
            *slot = v;
        }
    }
    Ok(())
}

/// Finds the key whose value alone makes the defaults fail to deserialize (for error messages).
fn blame(table: &toml::Table) -> String {
    let Ok(defaults) = toml::Table::try_from(Config::default()) else {
        return "(config)".into();
    };
    for (section, v) in table {
        let Some(t) = v.as_table() else { continue };
        for (k, v) in t {
            let mut probe = defaults.clone();
            if let Some(sec) = probe.get_mut(section).and_then(toml::Value::as_table_mut) {
                sec.insert(k.clone(), v.clone());
            }
            if toml::Value::Table(probe).try_into::<Config>().is_err() {
                return format!("{section}.{k}");
            }
        }
    }
    "(config)".into()
}

/// Overrides given on the command line, as (`section.key`, value).
pub type FlagOverrides = Vec<(&'static str, String)>;

impl Config {
    /// Defaults, then the file (if any), then `HELIOS_*` from `env`, then `flags`; checked.
    pub fn load(
        file: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| key_err("(defaults)", e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                msg: e.to_string(),
            })?;
            let parsed: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                msg: e.to_string(),
            })?;
            overlay(&mut table, parsed)?;
        }
        let keys: Vec<(String, String)> = table
            .iter()
            .filter_map(|(s, v)| v.as_table().map(|t| (s, t)))
            .flat_map(|(s, t)| t.keys().map(move |k| (s.clone(), k.clone())))
            .collect();
        for (s, k) in &keys {
            let var = format!("HELIOS_{}_{}", s.to_uppercase(), k.to_uppercase());
            if let Some(raw) = env(&var) {
                set_from_str(&mut table, s, k, &raw, &format!("from {var}"))?;
            }
        }
        for (key, raw) in flags {
            let (s, k) = key.split_once('.').expect("flag keys are section.key");
            set_from_str(&mut table, s, k, raw, "from the command line")?;
        }
        let cfg: Config = match toml::Value::Table(table.clone()).try_into() {
            Ok(c) => c,
            Err(e) => {
                let e: toml::de::Error = e;
                return Err(key_err(&blame(&table), e.message().to_owned()));
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The configuration with secrets replaced (`--print-config`, `/debug/config`).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if !c.notices.key.is_empty() {
            c.notices.key = "(redacted)".into();
        }
        for url in [
            &mut c.bidding.campaigns_redis_url,
            &mut c.events.frequency_redis_url,
            &mut c.profiles.redis_url,
            &mut c.budget.redis_url,
        ] {
            *url = crate::admin::redact_url_password(url);
        }
        c
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Range checks; each names its key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let addr = |k: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map(drop)
                .map_err(|_| key_err(k, format!("not an address:port: {v:?}")))
        };
        addr("server.listen", &self.server.listen)?;
        addr("admin.listen", &self.admin.listen)?;
        parse_cpu_list(&self.server.cores).map_err(|m| key_err("server.cores", m))?;
        match self.threads.helper_cpus.trim() {
            "auto" | "all" => {}
            list => {
                parse_cpu_list(list).map_err(|m| key_err("threads.helper_cpus", m))?;
            }
        }
        if !(0..=19).contains(&self.threads.helper_nice) {
            return Err(key_err(
                "threads.helper_nice",
                format!("{} is outside 0..=19", self.threads.helper_nice),
            ));
        }
        let range = |k: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(key_err(k, format!("{v} is outside {lo}..={hi}")))
            }
        };
        let h = &self.http;
        range(
            "http.max_header_bytes",
            h.max_header_bytes as u64,
            512,
            1 << 20,
        )?;
        range("http.max_body_bytes", h.max_body_bytes as u64, 1, 64 << 20)?;
        range(
            "http.max_inflated_body_bytes",
            h.max_inflated_body_bytes as u64,
            h.max_body_bytes as u64,
            256 << 20,
        )?;
        range("http.idle_timeout_ms", h.idle_timeout_ms, 1, 86_400_000)?;
        range(
            "http.slow_client_timeout_ms",
            h.slow_client_timeout_ms,
            1,
            3_600_000,
        )?;
        range("http.linger_ms", h.linger_ms, 0, 60_000)?;
        range(
            "http.out_high_water_bytes",
            h.out_high_water_bytes as u64,
            1024,
            64 << 20,
        )?;
        range(
            "http.conn_buffer_bytes",
            h.conn_buffer_bytes as u64,
            512,
            16 << 20,
        )?;
        let s = &self.server;
        range(
            "server.listen_backlog",
            u64::from(s.listen_backlog),
            1,
            65_535,
        )?;
        range(
            "server.max_connections_per_core",
            u64::from(s.max_connections_per_core),
            1,
            1 << 20,
        )?;
        range("server.drain_timeout_ms", s.drain_timeout_ms, 0, 600_000)?;
        range(
            "budget.lease_ttl_ms",
            self.budget.lease_ttl_ms,
            400,
            3_600_000,
        )?;
        range(
            "budget.idle_return_ms",
            self.budget.idle_return_ms,
            100,
            86_400_000,
        )?;
        range("budget.nodes", u64::from(self.budget.nodes), 1, 100_000)?;
        redis_url("budget.redis_url", &self.budget.redis_url)?;
        let b = &self.bidding;
        range(
            "bidding.default_tmax_ms",
            u64::from(b.default_tmax_ms),
            1,
            60_000,
        )?;
        range(
            "bidding.network_margin_ms",
            u64::from(b.network_margin_ms),
            0,
            u64::from(b.default_tmax_ms),
        )?;
        range("bidding.shed_queue_pct", u64::from(b.shed_queue_pct), 0, 99)?;
        range("bidding.shed_interval_ms", b.shed_interval_ms, 1, 60_000)?;
        range("bidding.queue_target_us", b.queue_target_us, 0, 10_000_000)?;
        for x in b.trace_exchanges.split(',').map(str::trim) {
            let ok = x.is_empty()
                || x == "*"
                || (x.len() <= 32
                    && x.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')));
            if !ok {
                return Err(key_err(
                    "bidding.trace_exchanges",
                    format!("{x:?}: exchange names are 1..=32 of [A-Za-z0-9._-], or *"),
                ));
            }
        }
        range("bidding.turn_budget_us", b.turn_budget_us, 0, 10_000_000)?;
        if b.seat.is_empty() || b.seat.len() > 64 {
            return Err(key_err("bidding.seat", "must be 1..=64 bytes"));
        }
        if !b.campaigns.is_empty() && !std::path::Path::new(&b.campaigns).is_file() {
            return Err(key_err(
                "bidding.campaigns",
                format!("no such file: {}", b.campaigns),
            ));
        }
        range("admin.publish_ms", self.admin.publish_ms, 1, 60_000)?;
        let u = &self.uring;
        range("uring.ring_entries", u64::from(u.ring_entries), 8, 32_768)?;
        range("uring.buffers", u64::from(u.buffers), 1, 32_768)?;
        if !u.buffers.is_power_of_two() {
            return Err(key_err("uring.buffers", "must be a power of two"));
        }
        range(
            "uring.buffer_bytes",
            u64::from(u.buffer_bytes),
            512,
            1 << 20,
        )?;
        range("uring.tick_ms", u.tick_ms, 1, 10_000)?;
        let e = &self.events;
        if e.enabled && e.brokers.trim().is_empty() {
            return Err(key_err(
                "events.brokers",
                "empty (set events.enabled = false to run without Kafka)",
            ));
        }
        if e.enabled && e.spool_dir.is_empty() {
            return Err(key_err("events.spool_dir", "empty"));
        }
        range(
            "events.spool_max_bytes",
            e.spool_max_bytes,
            1 << 20,
            1 << 50,
        )?;
        range(
            "events.queue_capacity_per_core",
            e.queue_capacity_per_core as u64,
            16,
            1 << 24,
        )?;
        range(
            "events.shutdown_timeout_ms",
            e.shutdown_timeout_ms,
            0,
            600_000,
        )?;
        range(
            "events.startup_timeout_ms",
            e.startup_timeout_ms,
            0,
            600_000,
        )?;
        range(
            "events.frame_max_bytes",
            e.frame_max_bytes as u64,
            1024,
            60 * 1024,
        )?;
        range("events.frame_linger_ms", e.frame_linger_ms, 1, 10_000)?;
        let jb = e.journal_bytes_per_core;
        if jb != 0 {
            range("events.journal_bytes_per_core", jb, 1 << 16, 1 << 32)?;
            if !jb.is_multiple_of(4096) {
                return Err(key_err(
                    "events.journal_bytes_per_core",
                    "must be a multiple of 4096 (or 0 for no journal)",
                ));
            }
        }
        range(
            "events.idle_sleep_max_us",
            e.idle_sleep_max_us,
            50,
            1_000_000,
        )?;
        librdkafka_settings(&e.librdkafka).map_err(|m| key_err("events.librdkafka", m))?;
        redis_url("events.frequency_redis_url", &e.frequency_redis_url)?;
        redis_url(
            "bidding.campaigns_redis_url",
            &self.bidding.campaigns_redis_url,
        )?;
        let n = &self.notices;
        let scheme_ok = n.base_url.starts_with("http://") || n.base_url.starts_with("https://");
        if !n.base_url.is_empty() && !scheme_ok {
            return Err(key_err(
                "notices.base_url",
                "must start with http:// or https://",
            ));
        }
        if n.base_url.contains('?') || n.base_url.ends_with('/') {
            return Err(key_err(
                "notices.base_url",
                "scheme://host[:port][/path], no query, no trailing /",
            ));
        }
        range("notices.late_window_s", n.late_window_s, 1, 30 * 86_400)?;
        let p = &self.profiles;
        redis_url("profiles.redis_url", &p.redis_url)?;
        if !self.tls.redis_ca_file.is_empty() {
            read_ca_file(&self.tls.redis_ca_file).map_err(|m| key_err("tls.redis_ca_file", m))?;
        }
        if p.namespace.is_empty() {
            return Err(key_err("profiles.namespace", "empty"));
        }
        range(
            "profiles.expected_profiles",
            p.expected_profiles as u64,
            1,
            1 << 32,
        )?;
        range(
            "profiles.max_staleness_ms",
            p.max_staleness_ms,
            1,
            86_400_000,
        )?;
        range(
            "profiles.snapshot_interval_s",
            p.snapshot_interval_s,
            10,
            86_400,
        )?;
        range(
            "profiles.replica_fifo_priority",
            u64::from(p.replica_fifo_priority),
            0,
            99,
        )?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| key_err("log.level", e.to_string()))?;
        if self.server.node.len() > 32 {
            return Err(key_err("server.node", "at most 32 bytes"));
        }
        Ok(())
    }
}

/// A Redis URL key: "" (off), `redis://…` (plain text) or `rediss://…` (TLS, see [`Tls`]).
fn redis_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(key_err(
            key,
            "must start with redis:// (plain text) or rediss:// (TLS)",
        ))
    }
}

/// Reads a CA file (PEM): its bytes when it holds at least one certificate, else why not.
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let has_cert = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----");
    if has_cert {
        Ok(pem)
    } else {
        Err(format!("{path} holds no PEM certificate"))
    }
}

/// Parses "all" (→ empty list, meaning every allowed CPU) or "0-1,3".
/// Parses `events.librdkafka`: `key=value` pairs separated by commas ("" = none).
pub fn librdkafka_settings(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("{part:?} is not key=value"));
        };
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("bad librdkafka key {k:?}"));
        }
        out.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU list {s:?} (want \"all\" or e.g. \"0-1,3\")"))?;
        let b: usize = b
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU list {s:?} (want \"all\" or e.g. \"0-1,3\")"))?;
        if a > b || b >= 1024 {
            return Err(format!("bad CPU range {part:?}"));
        }
        for c in a..=b {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(file, |k| env.get(k).cloned(), &flags)
    }

    fn tmp(text: &str) -> String {
        let p = std::env::temp_dir().join(format!(
            "helios-cfg-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = load(None, &[], vec![]).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.admin.listen, "127.0.0.1:9100");
        assert_eq!(c.http.max_header_bytes, 8192);
        assert_eq!(c.http.max_body_bytes, 65536);
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
    }

    #[test]
    fn precedence_file_env_flags() {
        let f = tmp("[http]\nmax_body_bytes = 1000\nidle_timeout_ms = 7\n[server]\nnull = true\n");
        let c = load(
            Some(&f),
            &[
                ("HELIOS_HTTP_IDLE_TIMEOUT_MS", "9"),
                ("HELIOS_SERVER_DRIVER", "epoll"),
            ],
            vec![("http.idle_timeout_ms", "11".into())],
        )
        .unwrap();
        assert_eq!(c.http.max_body_bytes, 1000);
        assert_eq!(c.http.idle_timeout_ms, 11);
        assert_eq!(c.server.driver, Driver::Epoll);
        assert!(c.server.null);
    }

    #[test]
    fn journal_size_is_checked_and_zero_turns_it_off() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        let c = load(None, &[], vec![]).unwrap();
        assert_eq!(c.events.journal_bytes_per_core, 16 << 20);
        for bad in ["1000", "65537", "4096"] {
            assert!(
                msg(load(
                    None,
                    &[("HELIOS_EVENTS_JOURNAL_BYTES_PER_CORE", bad)],
                    vec![]
                ))
                .contains("events.journal_bytes_per_core"),
                "{bad} refused"
            );
        }
        let c = load(
            None,
            &[("HELIOS_EVENTS_JOURNAL_BYTES_PER_CORE", "0")],
            vec![],
        )
        .unwrap();
        assert_eq!(c.events.journal_bytes_per_core, 0);
    }

    #[test]
    fn threads_and_producer_settings() {
        let c = load(None, &[], vec![]).unwrap();
        assert_eq!(c.threads.helper_cpus, "auto");
        assert_eq!(c.threads.helper_policy, crate::threads::HelperPolicy::Batch);
        assert_eq!(c.threads.helper_nice, 0);
        assert_eq!(c.events.idle_sleep_max_us, 5_000);
        let c = load(
            None,
            &[
                ("HELIOS_THREADS_HELPER_CPUS", "0,2-3"),
                ("HELIOS_THREADS_HELPER_POLICY", "normal"),
                ("HELIOS_THREADS_HELPER_NICE", "10"),
                (
                    "HELIOS_EVENTS_LIBRDKAFKA",
                    "linger.ms=20, batch.num.messages = 100",
                ),
            ],
            vec![],
        )
        .unwrap();
        assert_eq!(c.threads.helper_cpus, "0,2-3");
        assert_eq!(
            c.threads.helper_policy,
            crate::threads::HelperPolicy::Normal
        );
        assert_eq!(c.threads.helper_nice, 10);
        let extra = librdkafka_settings(&c.events.librdkafka).unwrap();
        assert_eq!(extra["linger.ms"], "20");
        assert_eq!(extra["batch.num.messages"], "100");
        assert!(librdkafka_settings("").unwrap().is_empty());
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        for (var, val, key) in [
            ("HELIOS_THREADS_HELPER_CPUS", "2-1", "threads.helper_cpus"),
            (
                "HELIOS_THREADS_HELPER_POLICY",
                "fifo",
                "threads.helper_policy",
            ),
            ("HELIOS_THREADS_HELPER_NICE", "20", "threads.helper_nice"),
            ("HELIOS_THREADS_HELPER_NICE", "-5", "threads.helper_nice"),
            ("HELIOS_EVENTS_LIBRDKAFKA", "linger.ms", "events.librdkafka"),
            (
                "HELIOS_EVENTS_IDLE_SLEEP_MAX_US",
                "0",
                "events.idle_sleep_max_us",
            ),
        ] {
            let m = msg(load(None, &[(var, val)], vec![]));
            assert!(m.contains(key), "{var}={val}: {m}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        assert!(
            msg(load(
                None,
                &[("HELIOS_HTTP_MAX_BODY_BYTES", "lots")],
                vec![]
            ))
            .contains("http.max_body_bytes")
        );
        assert!(msg(load(None, &[("HELIOS_SERVER_DRIVER", "kqueue")], vec![])).contains("driver"));
        assert!(
            msg(load(None, &[], vec![("server.listen", "nowhere".into())]))
                .contains("server.listen")
        );
        assert!(
            msg(load(None, &[], vec![("server.cores", "3-1".into())])).contains("server.cores")
        );
        assert!(
            msg(load(None, &[], vec![("uring.buffers", "100".into())])).contains("uring.buffers")
        );
        let f = tmp("[http]\nmax_bdy_bytes = 1\n");
        assert!(msg(load(Some(&f), &[], vec![])).contains("http.max_bdy_bytes"));
        let f = tmp("[http]\nmax_body_bytes = \"big\"\n#x");
        assert!(msg(load(Some(&f), &[], vec![])).contains("http.max_body_bytes"));
        let f = tmp("[nope]\na = 1\n##");
        assert!(msg(load(Some(&f), &[], vec![])).contains("nope"));
        let f = tmp("[http\n");
        assert!(msg(load(Some(&f), &[], vec![])).contains("config file"));
        assert!(
            msg(load(
                None,
                &[("HELIOS_BIDDING_CAMPAIGNS", "/no/such")],
                vec![]
            ))
            .contains("bidding.campaigns")
        );
        assert!(msg(load(None, &[("HELIOS_LOG_LEVEL", "[[[")], vec![])).contains("log.level"));
    }

    #[test]
    fn redis_urls_may_be_tls_and_the_ca_file_is_checked() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        let c = load(
            None,
            &[
                ("HELIOS_PROFILES_REDIS_URL", "rediss://localhost:6380/"),
                (
                    "HELIOS_BIDDING_CAMPAIGNS_REDIS_URL",
                    "rediss://localhost:6380/",
                ),
                (
                    "HELIOS_EVENTS_FREQUENCY_REDIS_URL",
                    "redis://127.0.0.1:6379/",
                ),
            ],
            vec![],
        )
        .unwrap();
        assert_eq!(c.profiles.redis_url, "rediss://localhost:6380/");
        assert!(c.tls.redis_ca_file.is_empty());
        for (var, key) in [
            ("HELIOS_PROFILES_REDIS_URL", "profiles.redis_url"),
            (
                "HELIOS_BIDDING_CAMPAIGNS_REDIS_URL",
                "bidding.campaigns_redis_url",
            ),
            (
                "HELIOS_EVENTS_FREQUENCY_REDIS_URL",
                "events.frequency_redis_url",
            ),
        ] {
            let m = msg(load(None, &[(var, "http://x:6379/")], vec![]));
            assert!(m.contains(key) && m.contains("rediss://"), "{m}");
        }
        let m = msg(load(
            None,
            &[("HELIOS_TLS_REDIS_CA_FILE", "/no/such/ca.crt")],
            vec![],
        ));
        assert!(
            m.contains("tls.redis_ca_file") && m.contains("/no/such/ca.crt"),
            "{m}"
        );
        let not_pem = tmp("not a certificate at all, just some text\n");
        let m = msg(load(
            None,
            &[("HELIOS_TLS_REDIS_CA_FILE", &not_pem)],
            vec![],
        ));
        assert!(
            m.contains("tls.redis_ca_file") && m.contains("no PEM certificate"),
            "{m}"
        );
        let pem = tmp("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        let c = load(None, &[("HELIOS_TLS_REDIS_CA_FILE", &pem)], vec![]).unwrap();
        assert_eq!(c.tls.redis_ca_file, pem);
        assert!(read_ca_file(&pem).unwrap().starts_with(b"-----BEGIN"));
    }

    #[test]
    fn profile_snapshot_is_off_by_default_and_bounded() {
        let c = load(None, &[], vec![]).unwrap();
        assert!(c.profiles.snapshot_path.is_empty());
        let c = load(
            None,
            &[(
                "HELIOS_PROFILES_SNAPSHOT_PATH",
                "/var/lib/helios/profiles.snap",
            )],
            vec![("profiles.snapshot_interval_s", "60".into())],
        )
        .unwrap();
        assert_eq!(c.profiles.snapshot_path, "/var/lib/helios/profiles.snap");
        assert_eq!(c.profiles.snapshot_interval_s, 60);
        let e = load(
            None,
            &[],
            vec![("profiles.snapshot_interval_s", "1".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("profiles.snapshot_interval_s"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("all").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("3, 0-1,1").unwrap(), vec![3, 0, 1]);
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("2-1").is_err());
    }
}

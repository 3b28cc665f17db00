//! A PostgreSQL instance of the test's own (scripts/services.sh with its own run dir and port),
//! for tests that stop and restart PostgreSQL under the reporter. Stopped by PID and its run dir
//! removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Own PostgreSQL instance, stopped (by PID) and removed on drop.
pub struct OwnPg {
    pub run: PathBuf,
    pub port: u16,
}

impl OwnPg {
    /// Starts an instance in `run` (emptied first) on `port`, or answers `None` (the test prints
    /// `skipped`) when this machine cannot run one (needs root and /usr/lib/postgresql) —
    /// unless HELIOS_REQUIRE_SERVICES=1, which makes that a failure.
    pub fn start(test: &str, run: PathBuf, port: u16) -> Option<OwnPg> {
        let pgbin_present = std::fs::read_dir("/usr/lib/postgresql")
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        if !pgbin_present || !is_root {
            if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: needs root and /usr/lib/postgresql to run its own PostgreSQL");
            }
            println!("skipped: {test}: needs root and PostgreSQL binaries");
            return None;
        }
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).expect("run dir");
        let pg = OwnPg { run, port };
        assert!(pg.services("start"), "{test}: start our own PostgreSQL");
        Some(pg)
    }

    /// The `helios` database's URL (the admin URL for [`super::TestDb::create`]).
    pub fn admin_url(&self) -> String {
        format!("postgres://helios:helios@127.0.0.1:{}/helios", self.port)
    }

    /// Runs `scripts/services.sh <what> postgres` for this instance.
    pub fn services(&self, what: &str) -> bool {
        // Read when the test runs, not when it was built: a binary built from another checkout
        // (a CI clone sharing the target dir) must run this checkout's script.
        let script = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
                std::path::PathBuf::from,
            )
            .join("../scripts/services.sh");
        Command::new("bash")
            .arg(script)
            .args([what, "postgres"])
            .env("HELIOS_RUN", &self.run)
            .env("HELIOS_PG_PORT", self.port.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Fast shutdown (SIGINT to the postmaster: open transactions are rolled back), then wait.
    pub fn stop_fast(&self) {
        let pidfile = self.run.join("postgres/postmaster.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .expect("postmaster.pid of our own PostgreSQL");
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        for _ in 0..200 {
            if !pidfile.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("our PostgreSQL (pid {pid}) did not stop within 10 s");
    }
}

impl OwnPg {
    /// Immediate shutdown (SIGQUIT to the postmaster): every process exits at once without
    /// writing anything more — WAL still in PostgreSQL's buffers is lost, as in a crash; the
    /// next start runs crash recovery. Then waits for the processes to be gone.
    pub fn stop_immediate(&self) {
        let pidfile = self.run.join("postgres/postmaster.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .expect("postmaster.pid of our own PostgreSQL");
        let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        for _ in 0..200 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // scripts/services.sh keeps the PID of the `runuser` that started the
                // postmaster, which may outlive it for a moment (or stay a zombie): forget it,
                // so that `start` starts PostgreSQL again.
                let _ = std::fs::remove_file(self.run.join("postgres.pid"));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("our PostgreSQL (pid {pid}) did not stop within 10 s");
    }

    /// The superuser's URL of the `helios` database (trust over loopback).
    pub fn superuser_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/helios", self.port)
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        self.services("stop");
        if self.run.join("postgres/postmaster.pid").exists() {
            self.stop_fast();
        }
        // The data directory is this run's only: do not leave it behind.
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Raw rows stored, or `None` while PostgreSQL does not answer.
pub async fn count_events(url: &str) -> Option<i64> {
    let c = reporter::db::connect(url).await.ok()?;
    c.query_one("SELECT count(*) FROM events", &[])
        .await
        .ok()
        .map(|r| r.get(0))
}

/// Waits (at most 60 s) for the first batch in `url`'s raw table: the rows it stored, or `None`.
pub async fn first_batch(url: &str) -> Option<i64> {
    super::wait_for(Duration::from_secs(60), || async {
        count_events(url).await.filter(|n| *n > 0)
    })
    .await
}

/// Waits (at most `timeout`) until `url`'s raw table holds exactly `want` rows: `Some(want)`, or
/// `None` when it did not within `timeout`.
pub async fn rows_reach(url: &str, want: i64, timeout: Duration) -> Option<i64> {
    super::wait_for(timeout, || async {
        count_events(url).await.filter(|n| *n == want)
    })
    .await
}

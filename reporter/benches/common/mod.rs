//! Shared by the reporter's benchmarks: a throw-away database, percentiles.
#![allow(dead_code)]

use std::time::Duration;

#[derive(Debug)]
pub struct BenchDb {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str, name: &str) -> BenchDb {
        let admin = reporter::db::connect(admin_url)
            .await
            .expect("admin connection");
        let name = &format!("{name}_{}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create bench database");
        let i = admin_url
            .rfind('/')
            .expect("HELIOS_PG_URL has a database part");
        BenchDb {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{}/{name}", &admin_url[..i]),
        }
    }
    pub async fn drop_db(self) {
        let admin = reporter::db::connect(&self.admin_url)
            .await
            .expect("admin connection");
        // Retried: an autovacuum worker may hold the database for a moment.
        for _ in 0..20 {
            let r = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name))
                .await;
            if r.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        println!("note: could not drop {}", self.name);
    }
}

pub fn pg_url_or_skip(name: &str) -> Option<String> {
    match std::env::var("HELIOS_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            println!("skipped: {name}: HELIOS_PG_URL not set");
            None
        }
    }
}

/// (p50, p95, p99, max) of durations.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.95), at(0.99), samples[samples.len() - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The reporter binary to start: `HELIOS_REPORTER_BIN` when set (a copy taken right after the
/// build: the shared target directory may be rewritten by other worktrees' builds), else the one
/// cargo built with this benchmark.
pub fn reporter_bin() -> String {
    std::env::var("HELIOS_REPORTER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_helios-reporter").to_owned())
}

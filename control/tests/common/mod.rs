//! Service lookup for integration tests: `HELIOS_REDIS_URL` or skip (panic when
//! `HELIOS_REQUIRE_SERVICES=1`).

/// The Redis URL with database `db` selected (tests run in parallel, one database each), after
/// flushing that database. `None` (test skipped) when no Redis is configured.
pub fn redis(db: u8) -> Option<String> {
    let Ok(base) = std::env::var("HELIOS_REDIS_URL") else {
        if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("HELIOS_REDIS_URL is not set but HELIOS_REQUIRE_SERVICES=1");
        }
        println!("skipped: HELIOS_REDIS_URL not set (start redis with scripts/services.sh)");
        return None;
    };
    let url = format!("{}/{db}", base.trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).expect("valid redis url");
    let mut con = client
        .get_connection()
        .expect("redis reachable at HELIOS_REDIS_URL");
    redis::cmd("FLUSHDB").exec(&mut con).expect("flushdb");
    Some(url)
}

pub fn con(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("valid redis url")
        .get_connection()
        .expect("redis reachable")
}

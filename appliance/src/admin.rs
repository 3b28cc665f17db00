//! The admin port (loopback by default): `/metrics`, `/healthz`, `/readyz`, `/debug/config`.
//!
//! One plain thread with a blocking listener, one request per connection, off the bidding
//! cores. It reads the cores' metrics only through their published copies
//! ([`crate::metrics::Published`]), so scraping never touches a core's hot state. It may
//! allocate freely. Must never: be reachable from the bid port, or block a core.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::server::Shared;

/// Serves the admin port until the process exits.
pub fn spawn(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("helios-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = serve(s, &shared) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(())
}

fn serve(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 8192];
    let mut n = 0;
    let (method, path) = loop {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            return Ok(());
        }
        n += r;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("/").to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if n < buf.len() => continue,
            _ => return reply(&mut s, 400, "text/plain", "bad request\n"),
        }
    };
    let path = path.split('?').next().unwrap_or("/");
    if method != "GET" && method != "HEAD" {
        return reply(&mut s, 405, "text/plain", "method not allowed\n");
    }
    match path {
        "/metrics" => {
            let mut out = String::with_capacity(16 * 1024);
            crate::metrics::render(&mut out, &shared.published);
            let ready = u8::from(shared.ready().is_ok());
            out.push_str(
                "# HELP helios_ready 1 when the node accepts bids.\n# TYPE helios_ready gauge\n",
            );
            out.push_str(&format!("helios_ready {ready}\n"));
            if let Some(l) = &shared.live {
                l.render(&mut out);
            }
            if let Some(b) = &shared.budget {
                b.render(&mut out);
            }
            out.push_str("# HELP helios_core_info The driver each core runs.\n# TYPE helios_core_info gauge\n");
            if let Ok(d) = shared.drivers.lock() {
                for (core, driver) in d.iter() {
                    out.push_str(&format!(
                        "helios_core_info{{core=\"{core}\",driver=\"{driver}\"}} 1\n"
                    ));
                }
            }
            if let Ok(p) = shared.pipeline.lock()
                && let Some(p) = p.as_ref()
            {
                pipeline_metrics(&mut out, &p.metrics());
                journal_metrics(&mut out, &p.journal_usage());
            }
            reply(&mut s, 200, "text/plain; version=0.0.4", &out)
        }
        "/healthz" => reply(&mut s, 200, "text/plain", "ok\n"),
        "/readyz" => match shared.ready() {
            Ok(()) => match shared.live.as_ref().and_then(|l| l.node_version()) {
                Some(v) => reply(
                    &mut s,
                    200,
                    "text/plain",
                    &format!("ready\ncampaign_set_version {v}\n"),
                ),
                None => reply(&mut s, 200, "text/plain", "ready\n"),
            },
            Err(why) => reply(&mut s, 503, "text/plain", &format!("not ready: {why}\n")),
        },
        "/debug/config" => reply(&mut s, 200, "text/plain", &shared.config_toml),
        _ => reply(&mut s, 404, "text/plain", "not found\n"),
    }
}

/// The event pipeline's node-level series (one producer thread per node, so no `core` label).
fn pipeline_metrics(out: &mut String, m: &pipeline::MetricsSnapshot) {
    let rows: [(&str, &str, &str, u64); 12] = [
        (
            "helios_pipeline_queue_depth",
            "gauge",
            "Events waiting in the cores' queues.",
            m.queue_depth,
        ),
        (
            "helios_pipeline_produced_total",
            "counter",
            "Events acknowledged by Kafka.",
            m.produced,
        ),
        (
            "helios_pipeline_spooled_total",
            "counter",
            "Events written to the disk spool.",
            m.spooled,
        ),
        (
            "helios_pipeline_replayed_total",
            "counter",
            "Spooled events replayed to Kafka.",
            m.replayed,
        ),
        (
            "helios_pipeline_overflowed_total",
            "counter",
            "Events a full core queue sent to the spool.",
            m.overflowed,
        ),
        (
            "helios_pipeline_dropped_total",
            "counter",
            "Events lost (spool full or I/O error).",
            m.dropped(),
        ),
        (
            "helios_pipeline_delivery_errors_total",
            "counter",
            "Kafka delivery errors.",
            m.delivery_errors,
        ),
        (
            "helios_pipeline_journal_replayed_total",
            "counter",
            "Events found unacknowledged in the cores' journals at start and replayed.",
            m.journal_replayed,
        ),
        (
            "helios_pipeline_journal_full_total",
            "counter",
            "Events that found their core's journal full and went to the spool instead.",
            m.journal_full,
        ),
        (
            "helios_pipeline_spool_bytes",
            "gauge",
            "Bytes in the disk spool.",
            m.spool_bytes,
        ),
        (
            "helios_pipeline_broker_up",
            "gauge",
            "1 when the broker answers.",
            u64::from(m.broker_up),
        ),
        (
            "helios_pipeline_freq_applied_total",
            "counter",
            "Frequency increments applied in Redis.",
            m.freq_applied,
        ),
    ];
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
}

/// Each core's write-ahead journal: bytes drained and not yet acknowledged, and capacity.
fn journal_metrics(out: &mut String, usage: &[(u16, u64, u64)]) {
    if usage.is_empty() {
        return;
    }
    crate::metrics::per_core_series(
        out,
        "helios_pipeline_journal_bytes",
        "Journal bytes of events drained and not yet acknowledged by Kafka or the spool.",
        "gauge",
        usage.iter().map(|(core, used, _)| (core, used)),
    );
    crate::metrics::per_core_series(
        out,
        "helios_pipeline_journal_capacity_bytes",
        "Size of each core's journal ring.",
        "gauge",
        usage.iter().map(|(core, _, cap)| (core, cap)),
    );
}

/// `url` with the password of its userinfo (`scheme://user:password@host…`) replaced by
/// `(redacted)`, for showing a configured URL (`/debug/config`, `--print-config`). A URL without
/// a password comes back unchanged; nothing after the host is touched.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; the userinfo at its last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:(redacted)@{host}{tail}"),
        None => url.to_owned(),
    }
}

fn reply(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::http::reason_phrase(status),
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}

impl Shared {
    /// Ready when campaigns are loaded, every core's loop runs, and no shutdown has begun.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shutdown.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        if !self.campaigns_loaded.load(Ordering::Relaxed) {
            return Err("campaigns not loaded");
        }
        if self
            .live
            .as_ref()
            .is_some_and(|l| l.node_version().is_none())
        {
            return Err("campaign set from redis not loaded");
        }
        if self.budget.as_ref().is_some_and(|b| !b.ready()) {
            return Err("budget leases loading");
        }
        if let Ok(p) = self.profiles.lock()
            && p.as_ref().is_some_and(|r| !r.is_loaded())
        {
            return Err("profile cache loading");
        }
        if self.cores_running.load(Ordering::Relaxed) < self.n_cores {
            return Err("event loops starting");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url_password as r;

    #[test]
    fn url_passwords_are_redacted_and_nothing_else() {
        assert_eq!(
            r("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:(redacted)@10.0.0.1:6379/0"
        );
        assert_eq!(
            r("redis://default:s3cret@redis:6379"),
            "redis://default:(redacted)@redis:6379"
        );
        // '@' and ':' in the password itself (the userinfo ends at the authority's last '@').
        assert_eq!(
            r("redis://u:p@ss:w@host:1/2?x=@"),
            "redis://u:(redacted)@host:1/2?x=@"
        );
        for same in [
            "redis://127.0.0.1:6379/",
            "redis://user@host/",
            "",
            "not a url",
            "redis://host/path@x:y",
        ] {
            assert_eq!(r(same), same);
        }
    }
}

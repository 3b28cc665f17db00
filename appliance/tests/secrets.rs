//! Secrets never logged (issue 12, security): the appliance runs with its notice-signing key
//! from the environment at the most verbose log level, serves bids and a forged notice, and is
//! stopped; the key appears neither in its logs (start-up to exit) nor in `/debug/config`.

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "rel-test-notice-key-7f3a9c1e5b2d4068";

#[test]
fn the_notice_key_is_never_logged_nor_shown_by_the_admin_port() {
    let mut s = Server::start(
        "epoll",
        &[],
        &[
            ("HELIOS_NOTICES_KEY", SECRET),
            ("HELIOS_LOG_LEVEL", "trace"),
        ],
    );
    let mut c = s.client();
    let r = c.roundtrip(&post("/openrtb2/bid", BID.as_bytes(), ""));
    assert_eq!(r.status, 200, "the bid is answered");
    // A forged notice: rejected (and logged as rejected, without the key).
    let r = c.roundtrip(b"GET /notice/win?p=1.5&s=AAAA HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);

    let (status, config) = s.admin_get("/debug/config");
    assert_eq!(status, 200);
    assert!(!config.contains(SECRET), "/debug/config shows the key");
    assert!(
        config.contains("(redacted)"),
        "/debug/config says the key is redacted"
    );

    s.signal(libc::SIGTERM);
    let _ = s.wait_exit(Duration::from_secs(10));
    assert!(s.log_contains("\""), "the log was captured (JSON lines)");
    assert!(!s.log_contains(SECRET), "the notice key appears in the log");
}

//! Sans-IO HTTP/1.1 framing: bytes in, one [`Request`] (borrowing those bytes) or a decision.
//!
//! Owns no state: [`parse`] reads the head with `httparse` (headers on the stack) and says
//! whether a whole request is there, more bytes are needed, or the input is refused with a status
//! ([`HttpError`]). [`write_response`] writes a response head and body into the caller's buffer.
//! Runs on whichever core owns the connection. Must never: allocate, panic on input, or accept
//! more than the configured header and body limits.

use std::io::Write as _;

/// Most headers a request may carry (past it: 431).
pub const MAX_HEADERS: usize = 32;

/// Framing limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request line plus headers (431 past it).
    pub max_header: usize,
    /// Bytes of body as sent, before any inflation (413 past it).
    pub max_body: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Head,
    Other,
}

/// A complete request, borrowing the connection's input buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'b> {
    pub method: Method,
    /// The path without the query.
    pub path: &'b str,
    /// The query without `?` ("" when none).
    pub query: &'b str,
    pub body: &'b [u8],
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// `X-Helios-Trace: 1` (or `true`): the sender asks for the decision trace (honoured only
    /// for exchanges allowed by `bidding.trace_exchanges`).
    pub trace: bool,
    /// `X-Helios-Exchange` (set by the gateway from the exchange's API key; "" when absent).
    pub exchange_header: &'b str,
    /// Bytes of input this request used (head and body).
    pub len: usize,
}

/// A request the framing refuses. Every one is answered and the connection closed, since what
/// follows in the stream cannot be trusted to start a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request header fields too large")]
    HeaderTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    #[error("transfer-encoding is not supported; send Content-Length")]
    TransferEncoding,
    #[error("unsupported expectation")]
    Expectation,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::HeaderTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Malformed(_) => 400,
            HttpError::UnsupportedEncoding => 415,
            HttpError::TransferEncoding => 501,
            HttpError::Expectation => 417,
        }
    }
}

/// What the input holds.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A whole request.
    Complete(Request<'b>),
    /// More bytes are needed. `expect_continue`: the head is complete, asks for
    /// `100 Continue`, and the body is not all here yet.
    Partial {
        expect_continue: bool,
    },
    Error(HttpError),
}

fn eq_token(v: &[u8], t: &str) -> bool {
    v.trim_ascii().eq_ignore_ascii_case(t.as_bytes())
}

fn has_token(v: &[u8], t: &str) -> bool {
    v.split(|&b| b == b',').any(|x| eq_token(x, t))
}

fn parse_len(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add((d - b'0') as usize)
    })
}

/// Parses one request from the start of `buf`.
pub fn parse(buf: &[u8], limits: Limits) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_header {
                Parsed::Error(HttpError::HeaderTooLarge)
            } else {
                Parsed::Partial {
                    expect_continue: false,
                }
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(HttpError::HeaderTooLarge),
        Err(_) => {
            return Parsed::Error(if buf.len() > limits.max_header {
                HttpError::HeaderTooLarge
            } else {
                HttpError::Malformed("bad request line or header")
            });
        }
    };
    if head_len > limits.max_header {
        return Parsed::Error(HttpError::HeaderTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let version = req.version.unwrap_or(1);
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    let mut gzip = false;
    let mut expect_continue = false;
    let mut trace = false;
    let mut exchange_header = "";
    for h in req.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let Some(l) = parse_len(h.value) else {
                return Parsed::Error(HttpError::Malformed("bad content-length"));
            };
            if content_length.is_some_and(|c| c != l) {
                return Parsed::Error(HttpError::Malformed("conflicting content-length"));
            }
            content_length = Some(l);
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Error(HttpError::TransferEncoding);
        } else if n.eq_ignore_ascii_case("content-encoding") {
            if eq_token(h.value, "gzip") || eq_token(h.value, "x-gzip") {
                gzip = true;
            } else if !eq_token(h.value, "identity") {
                return Parsed::Error(HttpError::UnsupportedEncoding);
            }
        } else if n.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                keep_alive = true;
            }
        } else if n.eq_ignore_ascii_case("x-helios-trace") {
            trace = eq_token(h.value, "1") || eq_token(h.value, "true");
        } else if n.eq_ignore_ascii_case("x-helios-exchange") {
            exchange_header = std::str::from_utf8(h.value).unwrap_or("").trim();
        } else if n.eq_ignore_ascii_case("expect") {
            if eq_token(h.value, "100-continue") {
                expect_continue = version == 1;
            } else {
                return Parsed::Error(HttpError::Expectation);
            }
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Parsed::Error(HttpError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Parsed::Partial { expect_continue };
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Complete(Request {
        method,
        path,
        query,
        body: &buf[head_len..total],
        gzip,
        keep_alive,
        trace,
        exchange_header,
        len: total,
    })
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes a response. `content_type` is ignored when `body` is empty and the status is 204.
/// `extra` is written as-is (each line ending in CRLF).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[u8],
    body: &[u8],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status != 204 {
        if !body.is_empty() {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if status != 204 {
        out.extend_from_slice(body);
    }
}

/// Writes a plain-text error response (`status`, `msg` and a newline as body).
pub fn write_text(out: &mut Vec<u8>, status: u16, msg: &dyn std::fmt::Display, close: bool) {
    // Format the body into a small stack buffer so that nothing is allocated.
    let mut tmp = [0u8; 256];
    let mut cur = std::io::Cursor::new(&mut tmp[..]);
    // A message longer than the buffer is cut short, which is fine for an error text.
    let _ = writeln!(cur, "{msg}");
    let n = cur.position() as usize;
    write_response(out, status, "text/plain", b"", &tmp[..n], close);
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_header: 8192,
        max_body: 65536,
    };

    fn complete(b: &[u8]) -> Request<'_> {
        match parse(b, L) {
            Parsed::Complete(r) => r,
            other => panic!("expected complete, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_post_with_body_and_query() {
        let raw =
            b"POST /openrtb2/bid/x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET";
        let r = complete(raw);
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, "/openrtb2/bid/x");
        assert_eq!(r.query, "a=1");
        assert_eq!(r.body, b"hello");
        assert!(r.keep_alive);
        assert!(!r.gzip);
        assert_eq!(r.len, raw.len() - 3);
    }

    #[test]
    fn partial_until_the_body_is_there() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhel";
        assert!(matches!(
            parse(raw, L),
            Parsed::Partial {
                expect_continue: true
            }
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nHost", L),
            Parsed::Partial {
                expect_continue: false
            }
        ));
    }

    #[test]
    fn connection_semantics() {
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.1\r\nContent-Encoding: GZIP\r\n\r\n").gzip);
    }

    #[test]
    fn limits_and_refusals() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(9000, b'a');
        assert!(matches!(
            parse(&big, L),
            Parsed::Error(HttpError::HeaderTooLarge)
        ));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse(&big, L),
            Parsed::Error(HttpError::HeaderTooLarge)
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            match parse(&many, L) {
                Parsed::Error(e) => e.status(),
                _ => 0,
            },
            431
        );
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (b"POST / HTTP/1.1\r\nContent-Encoding: br\r\n\r\n", 415),
            (b"POST / HTTP/1.1\r\nExpect: magic\r\n\r\n", 417),
            (b"\x00\x01garbage\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            match parse(raw, L) {
                Parsed::Error(e) => {
                    assert_eq!(e.status(), *want, "{:?}", String::from_utf8_lossy(raw))
                }
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            "application/json",
            b"X-A: 1\r\n",
            b"{}",
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n{}"
        );
        out.clear();
        write_response(&mut out, 204, "", b"", b"", true);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        out.clear();
        write_text(&mut out, 400, &"missing field: id", true);
        assert!(out.ends_with(b"Connection: close\r\n\r\nmissing field: id\n"));
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}

//! A sans-IO HTTP/1.1 client codec: request bytes out, responses parsed from bytes in.
//!
//! Just what the load generator and the exchange simulator need: requests are rendered once at
//! start-up ([`render_request`]); responses are framed by `Content-Length` or chunked encoding
//! ([`parse_response`]), bounded in header and body size. Owned by the connection's thread. Must
//! never: panic or allocate on a malformed response (errors are values), or read past `buf`.

use std::fmt::Write as _;

/// Largest response header block accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest response body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Renders a complete HTTP/1.1 request with `Content-Length` and keep-alive.
pub fn render_request(
    method: &str,
    host: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    // Writing into a String cannot fail.
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(ct) = content_type {
        let _ = write!(head, "Content-Type: {ct}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("x-openrtb-version: 2.6\r\n\r\n");
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Where a complete response sits in the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Byte range of the (de-chunked) body in the buffer, when not chunked; for a chunked
    /// response the body is not contiguous and this is the whole chunked region.
    pub body_start: usize,
    pub body_end: usize,
    /// The body was chunked (`body_start..body_end` then holds chunk framing too).
    pub chunked: bool,
    /// Bytes of `buf` this response used (a next response may follow).
    pub consumed: usize,
    /// The server said `Connection: close` (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Why bytes could not be a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `HTTP/1.x NNN …` or a header line is broken.
    Malformed,
    /// Header block or body past the limits above.
    TooLarge,
    /// Neither `Content-Length` nor chunked on a response that has a body.
    NoFraming,
}

/// `Ok(None)`: need more bytes. `Ok(Some(r))`: a complete response at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, ParseError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEADER_BYTES {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEADER_BYTES {
        return Err(ParseError::TooLarge);
    }
    let head = &buf[..head_end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = trim_cr(lines.next().ok_or(ParseError::Malformed)?);
    if status_line.len() < 12 || !status_line.starts_with(b"HTTP/1.") || status_line[8] != b' ' {
        return Err(ParseError::Malformed);
    }
    let http10 = status_line[7] == b'0';
    let status = parse_u64(&status_line[9..12]).ok_or(ParseError::Malformed)? as u16;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        let line = trim_cr(line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Malformed)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = Some(parse_u64(value).ok_or(ParseError::Malformed)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = contains_ci(value, b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            if contains_ci(value, b"close") {
                close = true;
            } else if contains_ci(value, b"keep-alive") {
                close = false;
            }
        }
    }
    let body_start = head_end + 4;
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        return Ok(Some(Response {
            status,
            body_start,
            body_end: body_start,
            chunked: false,
            consumed: body_start,
            close,
        }));
    }
    if chunked {
        return match chunked_end(&buf[body_start..])? {
            None => Ok(None),
            Some(n) => Ok(Some(Response {
                status,
                body_start,
                body_end: body_start + n,
                chunked: true,
                consumed: body_start + n,
                close,
            })),
        };
    }
    let len = content_length.ok_or(ParseError::NoFraming)?;
    if len > MAX_BODY_BYTES as u64 {
        return Err(ParseError::TooLarge);
    }
    let end = body_start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        body_start,
        body_end: end,
        chunked: false,
        consumed: end,
        close,
    }))
}

/// De-chunks a chunked body region (as returned in [`Response`]) into `out`.
pub fn dechunk(region: &[u8], out: &mut Vec<u8>) -> Result<(), ParseError> {
    let mut at = 0;
    loop {
        let line_end = find(&region[at..], b"\r\n").ok_or(ParseError::Malformed)? + at;
        let size = parse_hex(&region[at..line_end]).ok_or(ParseError::Malformed)?;
        at = line_end + 2;
        if size == 0 {
            return Ok(());
        }
        let end = at.checked_add(size).ok_or(ParseError::Malformed)?;
        out.extend_from_slice(region.get(at..end).ok_or(ParseError::Malformed)?);
        at = end + 2;
    }
}

/// Length of a complete chunked body at the start of `b` (through the final CRLF), if complete.
fn chunked_end(b: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut at = 0usize;
    loop {
        let Some(rel) = find(&b[at..], b"\r\n") else {
            return Ok(None);
        };
        let size = parse_hex(&b[at..at + rel]).ok_or(ParseError::Malformed)?;
        if size > MAX_BODY_BYTES || at > MAX_BODY_BYTES {
            return Err(ParseError::TooLarge);
        }
        at += rel + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let rest = &b[at..];
            if rest.len() < 2 {
                return Ok(None);
            }
            if rest.starts_with(b"\r\n") {
                return Ok(Some(at + 2));
            }
            return Ok(find(rest, b"\r\n\r\n").map(|e| at + e + 4));
        }
        at += size + 2;
        if b.len() < at {
            return Ok(None);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn parse_u64(d: &[u8]) -> Option<u64> {
    if d.is_empty() || d.len() > 18 {
        return None;
    }
    d.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

fn parse_hex(d: &[u8]) -> Option<usize> {
    // Chunk extensions (`;name=value`) are allowed and ignored.
    let d = trim(d.split(|&b| b == b';').next().unwrap_or(d));
    if d.is_empty() || d.len() > 8 {
        return None;
    }
    d.iter().try_fold(0usize, |acc, &c| {
        (c as char).to_digit(16).map(|v| acc * 16 + v as usize)
    })
}

/// An `http://host:port/path?query` URL split for a request (no TLS, no userinfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to (port 80 when absent).
    pub authority: String,
    /// What goes in the `Host` header (as written in the URL).
    pub host_header: String,
    /// Path and query, at least `/`.
    pub target: String,
}

pub fn parse_url(url: &str) -> Option<HttpUrl> {
    let rest = url.strip_prefix("http://")?;
    let (host, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let authority = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_owned()
    };
    Some(HttpUrl {
        authority,
        host_header: host.to_owned(),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_keep_alive_post() {
        let r = render_request(
            "POST",
            "h:1",
            "/openrtb2/bid",
            Some("application/json"),
            b"{}",
        );
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("POST /openrtb2/bid HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn parses_204_200_and_partial() {
        let b = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\nHTTP/1.1 200 OK\r\n";
        let r = parse_response(b).unwrap().unwrap();
        assert_eq!((r.status, r.consumed, r.close), (204, 38, false));
        assert_eq!(parse_response(&b[r.consumed..]), Ok(None));
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nConnection: close\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut {cut}");
        }
        let r = parse_response(full).unwrap().unwrap();
        assert_eq!(&full[r.body_start..r.body_end], b"hello");
        assert!(r.close);
    }

    #[test]
    fn parses_chunked_bodies() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut {cut}");
        }
        let r = parse_response(full).unwrap().unwrap();
        assert_eq!(r.consumed, full.len());
        let mut out = Vec::new();
        dechunk(&full[r.body_start..r.body_end], &mut out).unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert_eq!(
            parse_response(b"HTTX/1.1 200 OK\r\n\r\n"),
            Err(ParseError::Malformed)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(ParseError::Malformed)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::NoFraming)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"),
            Err(ParseError::TooLarge)
        );
        assert_eq!(
            parse_response(&vec![b'a'; MAX_HEADER_BYTES + 1]),
            Err(ParseError::TooLarge)
        );
    }

    #[test]
    fn splits_urls() {
        let u = parse_url("http://127.0.0.1:8080/notice/win?p=1").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.target, "/notice/win?p=1");
        let u = parse_url("http://example.test?x").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.target.as_str()),
            ("example.test:80", "/?x")
        );
        assert_eq!(parse_url("https://x/"), None);
    }
}

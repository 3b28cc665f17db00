//! Bid-response encoding into a buffer that is reused from one response to the next.
//!
//! [`ResponseEncoder::encode`] clears its buffer (keeping the capacity) and writes JSON by hand:
//! once the buffer has grown to the largest response seen, encoding allocates nothing.
//! [`parsed`] holds owned types to read a response back (tests, the exchange simulator).

use crate::money::{Currency, Micros};

/// One bid on one imp, borrowing everything from the decision and the request.
#[derive(Debug, Clone, Copy)]
pub struct Bid<'r> {
    pub id: &'r str,
    pub impid: &'r str,
    pub price: Micros,
    pub adid: Option<&'r str>,
    pub crid: &'r str,
    pub cid: &'r str,
    pub adomain: &'r [&'r str],
    pub dealid: Option<&'r str>,
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub nurl: Option<&'r str>,
    pub burl: Option<&'r str>,
    pub lurl: Option<&'r str>,
    pub adm: Option<&'r str>,
    /// The markup already escaped for a JSON string (no quotes; e.g. escaped once per creative
    /// when the campaigns were loaded, [`write_escaped`]): written as it is, in place of `adm`.
    pub adm_json: Option<&'r [u8]>,
}

#[derive(Debug, Clone, Copy)]
pub struct SeatBid<'r> {
    pub seat: Option<&'r str>,
    pub bid: &'r [Bid<'r>],
}

#[derive(Debug, Clone, Copy)]
pub struct BidResponse<'r> {
    pub id: &'r str,
    pub bidid: Option<&'r str>,
    pub cur: Currency,
    pub seatbid: &'r [SeatBid<'r>],
}

/// Encodes responses into one buffer owned by the caller's core.
#[derive(Debug)]
pub struct ResponseEncoder {
    buf: Vec<u8>,
}

impl ResponseEncoder {
    /// `capacity`: bytes reserved up front (a typical response with markup fits in 4 KiB).
    pub fn with_capacity(capacity: usize) -> Self {
        ResponseEncoder {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Encodes `r` and returns the JSON bytes, valid until the next call.
    pub fn encode(&mut self, r: &BidResponse<'_>) -> &[u8] {
        let out = &mut self.buf;
        out.clear();
        out.extend_from_slice(b"{\"id\":");
        write_str(out, r.id);
        if let Some(b) = r.bidid {
            out.extend_from_slice(b",\"bidid\":");
            write_str(out, b);
        }
        out.extend_from_slice(b",\"cur\":");
        write_str(out, r.cur.as_str());
        out.extend_from_slice(b",\"seatbid\":[");
        for (i, sb) in r.seatbid.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            if let Some(s) = sb.seat {
                out.extend_from_slice(b"\"seat\":");
                write_str(out, s);
                out.push(b',');
            }
            out.extend_from_slice(b"\"bid\":[");
            for (j, b) in sb.bid.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_bid(out, b);
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
        &self.buf
    }
}

fn write_bid(out: &mut Vec<u8>, b: &Bid<'_>) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, b.id);
    out.extend_from_slice(b",\"impid\":");
    write_str(out, b.impid);
    out.extend_from_slice(b",\"price\":");
    b.price.write_decimal(out);
    for (k, v) in [
        ("adid", b.adid),
        ("crid", Some(b.crid)),
        ("cid", Some(b.cid)),
        ("dealid", b.dealid),
    ] {
        if let Some(v) = v {
            write_key(out, k);
            write_str(out, v);
        }
    }
    if !b.adomain.is_empty() {
        out.extend_from_slice(b",\"adomain\":[");
        for (i, d) in b.adomain.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, d);
        }
        out.push(b']');
    }
    for (k, v) in [("w", b.w), ("h", b.h)] {
        if let Some(v) = v {
            write_key(out, k);
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
    }
    for (k, v) in [("nurl", b.nurl), ("burl", b.burl), ("lurl", b.lurl)] {
        if let Some(v) = v {
            write_key(out, k);
            write_str(out, v);
        }
    }
    if let Some(a) = b.adm_json {
        debug_assert!(
            a.last() != Some(&b'\\')
                || a.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0,
            "adm_json ends inside an escape"
        );
        out.extend_from_slice(b",\"adm\":\"");
        out.extend_from_slice(a);
        out.push(b'"');
    } else if let Some(v) = b.adm {
        write_key(out, "adm");
        write_str(out, v);
    }
    out.push(b'}');
}

fn write_key(out: &mut Vec<u8>, k: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Writes `s` as a JSON string literal, escaping what JSON requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// Writes the contents of a JSON string literal for `s` (no quotes): `"`, `\` and control
/// characters escaped, everything else copied. Used at load time to escape creative markup once
/// ([`Bid::adm_json`]) and by [`write_str`].
pub fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Most strings (ids, our notice URLs) need no escape: find the first byte that does eight
    // bytes at a time, copy everything before it at once.
    let clean = clean_prefix(bytes);
    out.extend_from_slice(&bytes[..clean]);
    let bytes = &bytes[clean..];
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Length of the longest prefix of `b` with no byte JSON escapes (`"`, `\\`, below 0x20), found
/// a word at a time: a word holds such a byte exactly when one of the three classic
/// "has a byte below n / equal to c" tests is non-zero (no false positives for n ≤ 128).
fn clean_prefix(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q & HIGH;
        let bs = w ^ (ONES * u64::from(b'\\'));
        let backslash = bs.wrapping_sub(ONES) & !bs & HIGH;
        if below_space | quote | backslash != 0 {
            break;
        }
        i += 8;
    }
    i
}

/// Whether `s` can be written between JSON quotes as it is (no `"`, `\\` or control byte).
pub fn is_json_safe(s: &[u8]) -> bool {
    s.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

/// Owned bid-response types for reading a response back.
pub mod parsed {
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct BidResponse {
        pub id: String,
        #[serde(default)]
        pub bidid: Option<String>,
        #[serde(default)]
        pub cur: Option<String>,
        #[serde(default)]
        pub seatbid: Vec<SeatBid>,
        #[serde(default)]
        pub nbr: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct SeatBid {
        #[serde(default)]
        pub seat: Option<String>,
        pub bid: Vec<Bid>,
    }

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Bid {
        pub id: String,
        pub impid: String,
        pub price: f64,
        #[serde(default)]
        pub adid: Option<String>,
        #[serde(default)]
        pub crid: Option<String>,
        #[serde(default)]
        pub cid: Option<String>,
        #[serde(default)]
        pub adomain: Vec<String>,
        #[serde(default)]
        pub dealid: Option<String>,
        #[serde(default)]
        pub w: Option<u32>,
        #[serde(default)]
        pub h: Option<u32>,
        #[serde(default)]
        pub nurl: Option<String>,
        #[serde(default)]
        pub burl: Option<String>,
        #[serde(default)]
        pub lurl: Option<String>,
        #[serde(default)]
        pub adm: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan escapes exactly what the byte loop escapes, at every offset.
    #[test]
    fn escaping_is_the_same_at_every_position() {
        let specials = [
            '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '~', '\u{7f}', 'é', '€',
        ];
        for len in 0..40 {
            for (k, sp) in specials.iter().enumerate() {
                for at in 0..=len {
                    let mut s: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                    s.insert(at.min(s.len()), *sp);
                    let mut fast = Vec::new();
                    write_escaped(&mut fast, &s);
                    let mut slow = Vec::new();
                    for c in s.chars() {
                        match c {
                            '"' => slow.extend_from_slice(b"\\\""),
                            '\\' => slow.extend_from_slice(b"\\\\"),
                            '\n' => slow.extend_from_slice(b"\\n"),
                            '\r' => slow.extend_from_slice(b"\\r"),
                            '\t' => slow.extend_from_slice(b"\\t"),
                            c if (c as u32) < 0x20 => {
                                slow.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                            }
                            c => slow.extend_from_slice(c.to_string().as_bytes()),
                        }
                    }
                    assert_eq!(fast, slow, "{k} at {at} of {len}");
                    let back: String =
                        serde_json::from_slice(&[b"\"", &fast[..], b"\""].concat()).unwrap();
                    assert_eq!(back, s);
                }
            }
        }
    }

    #[test]
    fn encodes_and_reads_back() {
        let adomain = ["shoes.example"];
        let bids = [Bid {
            id: "b1",
            impid: "1",
            price: Micros(1_250_000),
            adid: None,
            crid: "cr\"7",
            cid: "42",
            adomain: &adomain,
            dealid: Some("d1"),
            w: Some(300),
            h: Some(250),
            nurl: Some("http://h/notice/win?p=${AUCTION_PRICE}"),
            burl: None,
            lurl: None,
            adm: Some("<div>\n</div>"),
            adm_json: None,
        }];
        let sb = [SeatBid {
            seat: Some("helios"),
            bid: &bids,
        }];
        let r = BidResponse {
            id: "req\u{1}",
            bidid: None,
            cur: Currency::USD,
            seatbid: &sb,
        };
        let mut enc = ResponseEncoder::with_capacity(1024);
        let bytes = enc.encode(&r).to_vec();
        let back: parsed::BidResponse = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.id, "req\u{1}");
        let b = &back.seatbid[0].bid[0];
        assert_eq!(b.price, 1.25);
        assert_eq!(b.crid.as_deref(), Some("cr\"7"));
        assert_eq!(
            b.nurl.as_deref(),
            Some("http://h/notice/win?p=${AUCTION_PRICE}")
        );
        assert_eq!(b.adm.as_deref(), Some("<div>\n</div>"));
        assert_eq!(b.w, Some(300));
    }
}

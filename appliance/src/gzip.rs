//! [`Inflater`]: `Content-Encoding: gzip` request bodies, inflated into a bounded, reused buffer.
//!
//! Owned by one core (inside its [`crate::core::Core`]). The gzip member header and trailer
//! (RFC 1952) are read here; the deflate stream goes through one `flate2::Decompress` that is
//! reset between bodies, so after start-up inflating allocates nothing. The output buffer's
//! capacity is the bound: a body that inflates past it is refused ([`InflateError::TooLarge`]),
//! never grown. Must never: allocate per body, grow its buffer, or panic on input.

use flate2::{Crc, Decompress, FlushDecompress, Status};

/// Why a gzip body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("gzip: bad header")]
    BadHeader,
    #[error("gzip: corrupt deflate stream")]
    Corrupt,
    #[error("gzip: truncated body")]
    Truncated,
    #[error("gzip: checksum or length mismatch")]
    Checksum,
    #[error("gzip: body inflates past the limit")]
    TooLarge,
}

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const RESERVED: u8 = 0xe0;

/// One core's gzip inflater and its bounded output buffer.
pub struct Inflater {
    z: Decompress,
    out: Vec<u8>,
    limit: usize,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Inflater {
    /// `limit`: the largest inflated body accepted, in bytes (allocated now, once).
    pub fn new(limit: usize) -> Inflater {
        Inflater {
            z: Decompress::new(false),
            // One spare byte tells "exactly at the limit" from "past it".
            out: Vec::with_capacity(limit + 1),
            limit,
        }
    }

    /// Inflates one gzip member; returns the inflated bytes, valid until the next call.
    pub fn inflate(&mut self, gz: &[u8]) -> Result<&[u8], InflateError> {
        let start = header_len(gz)?;
        self.z.reset(false);
        self.out.clear();
        let body = &gz[start..];
        let status = self
            .z
            .decompress_vec(body, &mut self.out, FlushDecompress::Finish)
            .map_err(|_| InflateError::Corrupt)?;
        debug_assert!(
            self.out.capacity() == self.limit + 1,
            "the buffer never grows"
        );
        if self.out.len() > self.limit {
            return Err(InflateError::TooLarge);
        }
        match status {
            Status::StreamEnd => {}
            // No progress possible with the input given: either the output is full (too large)
            // or the input ended early.
            Status::Ok | Status::BufError => {
                return Err(if self.out.len() == self.limit + 1 {
                    InflateError::TooLarge
                } else {
                    InflateError::Truncated
                });
            }
        }
        let used = usize::try_from(self.z.total_in()).map_err(|_| InflateError::Corrupt)?;
        let trailer = body.get(used..used + 8).ok_or(InflateError::Truncated)?;
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let mut c = Crc::new();
        c.update(&self.out);
        if c.sum() != crc || isize != self.out.len() as u32 {
            return Err(InflateError::Checksum);
        }
        Ok(&self.out)
    }
}

/// Length of the gzip member header at the start of `gz`.
fn header_len(gz: &[u8]) -> Result<usize, InflateError> {
    let h = gz.get(..10).ok_or(InflateError::BadHeader)?;
    if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3] & RESERVED != 0 {
        return Err(InflateError::BadHeader);
    }
    let flg = h[3];
    let mut i = 10;
    if flg & FEXTRA != 0 {
        let x = gz.get(i..i + 2).ok_or(InflateError::BadHeader)?;
        i += 2 + u16::from_le_bytes([x[0], x[1]]) as usize;
    }
    for bit in [FNAME, FCOMMENT] {
        if flg & bit != 0 {
            let rest = gz.get(i..).ok_or(InflateError::BadHeader)?;
            let z = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(InflateError::BadHeader)?;
            i += z + 1;
        }
    }
    if flg & FHCRC != 0 {
        i += 2;
    }
    if i > gz.len() {
        return Err(InflateError::BadHeader);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_and_is_reusable() {
        let mut inf = Inflater::new(1024);
        for msg in [&b"hello gzip"[..], b"{\"id\":\"r\"}", b""] {
            assert_eq!(inf.inflate(&gz(msg)).unwrap(), msg);
        }
    }

    #[test]
    fn header_with_name_and_extra() {
        let mut e = flate2::GzBuilder::new()
            .filename("x.json")
            .extra(vec![1, 2, 3])
            .comment("c")
            .write(Vec::new(), Compression::fast());
        e.write_all(b"named").unwrap();
        let bytes = e.finish().unwrap();
        assert_eq!(Inflater::new(64).inflate(&bytes).unwrap(), b"named");
    }

    #[test]
    fn refuses_bombs_truncation_and_corruption() {
        let mut inf = Inflater::new(1000);
        assert_eq!(inf.inflate(&gz(&[b'a'; 1001])), Err(InflateError::TooLarge));
        assert_eq!(inf.inflate(&gz(&[b'a'; 1000])).unwrap().len(), 1000);
        let mut big = gz(&[7u8; 100_000]);
        assert_eq!(inf.inflate(&big), Err(InflateError::TooLarge));
        let ok = gz(b"some text that is fine");
        assert_eq!(
            inf.inflate(&ok[..ok.len() - 4]),
            Err(InflateError::Truncated)
        );
        assert_eq!(inf.inflate(&ok[..12]), Err(InflateError::Truncated));
        let n = big.len();
        big[n - 6] ^= 0xff; // crc
        let mut small = gz(b"abc");
        let m = small.len();
        small[m - 8] ^= 1;
        assert_eq!(inf.inflate(&small), Err(InflateError::Checksum));
        assert_eq!(
            inf.inflate(b"not gzip at all"),
            Err(InflateError::BadHeader)
        );
        assert_eq!(inf.inflate(&[0x1f, 0x8b]), Err(InflateError::BadHeader));
        let mut bad = gz(b"abcdefgh");
        bad[12] ^= 0xff;
        assert!(inf.inflate(&bad).is_err());
    }
}

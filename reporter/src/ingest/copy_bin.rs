//! PostgreSQL's binary `COPY` format, encoded by hand into a byte buffer: the raw rows and the
//! rollup deltas of one batch. Owned by the writer task (one encoder per `COPY`).
//!
//! Why not `tokio_postgres::binary_copy::BinaryCopyInWriter`: it encodes each field through a
//! `&dyn ToSql` with a type check per field and awaits the sink per row; at 22 fields per event
//! that was the larger part of the reporter's own CPU per event. Here a row is a few
//! `extend_from_slice` calls into one buffer, handed to the sink in chunks of about
//! [`CHUNK_BYTES`].
//!
//! Format (PostgreSQL docs, "COPY … Binary Format"): the 11-byte signature, a 32-bit flags
//! field (0) and a 32-bit header-extension length (0); per row a 16-bit field count, then per
//! field a 32-bit length (-1 for NULL) and the value in the type's binary send format (integers
//! big-endian, `timestamptz` as microseconds since 2000-01-01 UTC, `text` UTF-8, `bytea` raw);
//! the trailer is a 16-bit -1.
//!
//! Must never: write a row whose field count differs from the `COPY`'s column list (the server
//! rejects the whole `COPY`; [`CopyBuf::end_row`] checks it in debug builds).

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes accumulated before a chunk is handed to the connection.
pub const CHUNK_BYTES: usize = 1 << 20;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// `t` as PostgreSQL's binary `timestamptz`: microseconds since 2000-01-01 UTC (truncated, as
/// `postgres-types` does for times after that date).
pub fn pg_micros(t: SystemTime) -> i64 {
    let unix_us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    unix_us - PG_EPOCH_UNIX_SECS * 1_000_000
}

/// One `COPY`'s buffer: rows are appended, [`CopyBuf::take_chunk`] hands full chunks out.
#[derive(Debug)]
pub struct CopyBuf {
    buf: Vec<u8>,
    fields: i16,
    /// Fields written in the current row (debug check).
    in_row: i16,
}

impl CopyBuf {
    /// A buffer for rows of `fields` columns, with the header written.
    pub fn new(fields: i16) -> CopyBuf {
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBuf {
            buf,
            fields,
            in_row: 0,
        }
    }

    pub fn start_row(&mut self) {
        debug_assert_eq!(self.in_row, 0, "previous row not ended");
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
    }

    pub fn end_row(&mut self) {
        debug_assert_eq!(self.in_row, self.fields, "row field count");
        self.in_row = 0;
    }

    fn field(&mut self, bytes: &[u8]) {
        self.in_row += 1;
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    pub fn i16(&mut self, v: i16) {
        self.field(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.field(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    /// `text` (UTF-8 as is) or `bytea` (raw bytes): the same wire form.
    pub fn bytes(&mut self, v: &[u8]) {
        self.field(v);
    }

    pub fn text(&mut self, v: &str) {
        self.field(v.as_bytes());
    }

    pub fn ts(&mut self, t: SystemTime) {
        self.i64(pg_micros(t));
    }

    pub fn ts_opt(&mut self, t: Option<SystemTime>) {
        match t {
            Some(t) => self.ts(t),
            None => {
                self.in_row += 1;
                self.buf.extend_from_slice(&(-1i32).to_be_bytes());
            }
        }
    }

    /// The buffer so far as a chunk for the sink, when it reached [`CHUNK_BYTES`].
    pub fn take_chunk(&mut self) -> Option<Cursor<Vec<u8>>> {
        (self.buf.len() >= CHUNK_BYTES).then(|| self.take())
    }

    /// Whatever is buffered (possibly empty), leaving an empty buffer of the same capacity.
    fn take(&mut self) -> Cursor<Vec<u8>> {
        let cap = self.buf.capacity();
        Cursor::new(std::mem::replace(&mut self.buf, Vec::with_capacity(cap)))
    }

    /// Writes the trailer and answers the last chunk.
    pub fn finish(mut self) -> Cursor<Vec<u8>> {
        debug_assert_eq!(self.in_row, 0, "last row not ended");
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        Cursor::new(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn header_rows_and_trailer_in_the_documented_layout() {
        let mut b = CopyBuf::new(4);
        b.start_row();
        b.i16(-2);
        b.i64(0x0102_0304_0506_0708);
        b.text("ab");
        b.ts_opt(None);
        b.end_row();
        let out = b.finish().into_inner();
        let mut want = b"PGCOPY\n\xff\r\n\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 4]); // fields
        want.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xfe]);
        want.extend_from_slice(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, want);
    }

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        let y2k = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(pg_micros(y2k), 0);
        assert_eq!(pg_micros(y2k + Duration::from_nanos(1_999)), 1);
        assert_eq!(pg_micros(UNIX_EPOCH), -946_684_800_000_000);
    }

    #[test]
    fn chunks_are_handed_out_only_when_full() {
        let mut b = CopyBuf::new(1);
        assert!(b.take_chunk().is_none());
        let big = vec![7u8; CHUNK_BYTES];
        b.start_row();
        b.bytes(&big);
        b.end_row();
        let c = b.take_chunk().expect("a full chunk");
        assert!(c.get_ref().len() > CHUNK_BYTES);
        assert!(b.take_chunk().is_none(), "emptied");
        assert_eq!(b.finish().into_inner(), vec![0xff, 0xff]);
    }
}

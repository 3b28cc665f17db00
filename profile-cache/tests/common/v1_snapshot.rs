// A snapshot file as sessions 1–3 wrote it (format version 1), for the tests that check a
// version-1 file is refused. Shared by the unit tests in `src/snapshot.rs` (through `include!`)
// and the integration tests against Redis; it never runs outside tests.

/// A version-1 snapshot: the file frame (`HELIOSPS`, version 1, the five position words, the
/// namespace) around records of the 3-line layout (a 12-byte header starting with the record's
/// u16 length, the id, u32 segment ids and u16 weights, parts padded to 4), holding `ids` with
/// one segment (42, weight 500) each, then the record count and the CRC-32.
pub fn version_1_snapshot<S: AsRef<str>>(position: [u64; 5], ns: &str, ids: &[S]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"HELIOSPS");
    f.extend_from_slice(&1u32.to_le_bytes());
    for w in position {
        f.extend_from_slice(&w.to_le_bytes()); // created, synced at, last id (ms, seq), count
    }
    f.extend_from_slice(&(ns.len() as u16).to_le_bytes());
    f.extend_from_slice(ns.as_bytes());
    for id in ids {
        let id = id.as_ref();
        let seg_off = (12 + id.len()).next_multiple_of(4);
        let len = (seg_off + 6).next_multiple_of(4); // one segment
        let mut r = vec![0u8; len];
        r[0..2].copy_from_slice(&(len as u16).to_le_bytes());
        r[2] = id.len() as u8;
        r[3] = 1;
        r[12..12 + id.len()].copy_from_slice(id.as_bytes());
        r[seg_off..seg_off + 4].copy_from_slice(&42u32.to_le_bytes());
        r[seg_off + 4..seg_off + 6].copy_from_slice(&500u16.to_le_bytes());
        f.extend_from_slice(&r);
    }
    f.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

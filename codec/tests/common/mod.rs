//! Shared by the codec's integration tests: loading the corpus under `tests/corpus/`.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

/// `tests/corpus/<kind>/`, where kind is `valid` or `malformed`.
///
/// The crate's directory is read when the test runs (cargo and nextest set
/// `CARGO_MANIFEST_DIR`): a test binary built from another checkout of the same sources (a CI
/// clone sharing the target dir) must read this checkout's corpus, not the path it was built at.
pub fn corpus_dir(kind: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/corpus")
        .join(kind)
}

/// Every file of `tests/corpus/<kind>/` as (file name, bytes), sorted by name.
pub fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry of the corpus").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("corpus file names are UTF-8")
                .to_owned();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} is empty", dir.display());
    out
}

/// One corpus file's bytes.
pub fn file(kind: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(kind).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

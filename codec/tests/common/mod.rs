//! Shared by the codec's integration tests: loading the corpus under `tests/corpus/`.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

/// `tests/corpus/<kind>/`, where kind is `valid` or `malformed`.
pub fn corpus_dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

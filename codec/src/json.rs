//! The JSON decoder behind [`crate::decode`], and the nesting guard it needs.
//!
//! The decoder is sonic-rs, chosen by measurement (bench/RESULTS.md, "## Codec"): borrowed
//! strings, SIMD scanning, and no heap allocation for skipped values (serde_json allocates a
//! scratch stack for every nested value it skips). sonic-rs skips unknown values *recursively*,
//! so [`check_depth`] bounds nesting before it runs. Pure functions: no state, no I/O.

use std::fmt;

use serde::de::DeserializeSeed;

use crate::request::{BidRequest, FillRequest};
use crate::{DecodeError, MAX_DEPTH};

/// A JSON syntax or shape error, displayed on one line (position and reason, no input echo).
#[derive(Debug)]
pub struct JsonError(sonic_rs::Error);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // sonic-rs appends an excerpt of the input on the following lines: not for a 400 body.
        // Forward its text up to the first line break, without formatting it into a `String`
        // first (a 400 answer allocates nothing).
        use fmt::Write as _;
        struct FirstLine<'f, 'g> {
            f: &'f mut fmt::Formatter<'g>,
            done: bool,
        }
        impl fmt::Write for FirstLine<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                if self.done {
                    return Ok(());
                }
                match s.find(['\n', '\r']) {
                    Some(at) => {
                        self.done = true;
                        self.f.write_str(&s[..at])
                    }
                    None => self.f.write_str(s),
                }
            }
        }
        write!(FirstLine { f, done: false }, "{}", self.0)
    }
}

impl std::error::Error for JsonError {}

/// Decodes `text` (already checked: UTF-8, an object, bounded depth) into `req` in place.
pub(crate) fn fill<'a>(text: &'a str, req: &mut BidRequest<'a>) -> Result<(), DecodeError> {
    let mut de = sonic_rs::Deserializer::from_str(text);
    FillRequest(req)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| DecodeError::Json(JsonError(e)))
}

/// Refuses bodies nesting deeper than [`MAX_DEPTH`]. Nesting can never exceed the number of
/// `{` and `[` bytes, which a vectorised count finds in a few ns per KB; only a body with more
/// than `MAX_DEPTH` of them (real requests have a few hundred at most) pays for the exact,
/// string-aware scan.
pub(crate) fn check_depth(body: &[u8]) -> Result<(), DecodeError> {
    let opens = body.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if opens <= MAX_DEPTH {
        return Ok(());
    }
    match deepest(body, MAX_DEPTH) {
        Some(at) => Err(DecodeError::TooDeep { at }),
        None => Ok(()),
    }
}

/// The offset where nesting first exceeds `limit`, outside strings; `None` if it never does.
fn deepest(body: &[u8], limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings_and_escaped_quotes() {
        assert_eq!(deepest(br#"[[["]]]]]]"]]]"#, 3), None);
        assert_eq!(deepest(br#"[[["]]]]]]"]]]"#, 2), Some(2));
        assert_eq!(deepest(br#"["\"[[[[", [[]]]"#, 3), None);
        assert_eq!(deepest(br#"["\"[[[[", [[]]]"#, 2), Some(12));
        assert_eq!(deepest(br#"["\\", [[[]]]]"#, 3), Some(9));
        assert_eq!(deepest(b"{}{}{}[][]", 1), None);
    }

    #[test]
    fn few_brackets_skip_the_exact_scan() {
        let shallow = "[".repeat(MAX_DEPTH);
        assert!(check_depth(shallow.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            check_depth(deep.as_bytes()),
            Err(DecodeError::TooDeep { at }) if at == MAX_DEPTH
        ));
        // Many brackets, little depth: scanned exactly, accepted.
        let wide = "[]".repeat(MAX_DEPTH * 4);
        assert!(check_depth(wide.as_bytes()).is_ok());
    }
}

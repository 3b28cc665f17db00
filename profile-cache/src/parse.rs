//! Parsing one profile hash, as Redis returns it, into [`ProfileData`].
//!
//! Owns the rules for hostile values: a malformed field is skipped (the rest of the profile is
//! kept) and counted by the caller; unknown fields are ignored so writers can add fields before
//! the replica knows them. Runs on the replicator thread only; never panics on any input.

use crate::keys::{
    FIELD_BIRTH_YEAR, FIELD_FREQ_PREFIX, FIELD_GENDER, FIELD_LAST_SEEN, FIELD_SEGMENTS,
};
use crate::record::{BIRTH_YEARS, FreqBucket, Gender, MAX_WEIGHT, ProfileData};

/// Parses a decimal unsigned integer made of ASCII digits only (no sign, no spaces).
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Parses `"id:weight,id:weight"` into `out` (appending). All or nothing: on any bad pair `out`
/// is restored and `false` returned. An empty string is no segments.
fn parse_segments(v: &[u8], out: &mut Vec<(u32, u16)>) -> bool {
    let start = out.len();
    if v.is_empty() {
        return true;
    }
    for pair in v.split(|&c| c == b',') {
        let mut it = pair.splitn(2, |&c| c == b':');
        let id = it.next().and_then(parse_u32);
        let w = it.next().and_then(parse_u32);
        match (id, w) {
            (Some(id), Some(w)) if w <= u32::from(MAX_WEIGHT) => out.push((id, w as u16)),
            _ => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// Outcome of [`apply_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// Understood and stored.
    Applied,
    /// A frequency bucket older than the window: dropped, not an error.
    Expired,
    /// Not a field the replica knows: ignored.
    Unknown,
    /// A known field with a value that does not parse: skipped.
    Malformed,
}

/// Applies one hash field to `p`. Frequency buckets with an hour before `min_hour` are dropped.
pub(crate) fn apply_field(p: &mut ProfileData, name: &[u8], value: &[u8], min_hour: u32) -> Field {
    let ok = |b: bool| if b { Field::Applied } else { Field::Malformed };
    if let Some(rest) = name.strip_prefix(FIELD_FREQ_PREFIX.as_bytes()) {
        let mut it = rest.splitn(2, |&c| c == b':');
        let campaign = it.next().and_then(parse_u32);
        let hour = it.next().and_then(parse_u32);
        let count = parse_u32(value);
        return match (campaign, hour, count) {
            (Some(_), Some(h), Some(_)) if h < min_hour => Field::Expired,
            (Some(campaign), Some(hour), Some(count)) => {
                p.freq.push(FreqBucket {
                    campaign,
                    hour,
                    count,
                });
                Field::Applied
            }
            _ => Field::Malformed,
        };
    }
    match name {
        n if n == FIELD_SEGMENTS.as_bytes() => ok(parse_segments(value, &mut p.segments)),
        n if n == FIELD_BIRTH_YEAR.as_bytes() => {
            match parse_u64(value).and_then(|y| u16::try_from(y).ok()) {
                Some(y) if BIRTH_YEARS.contains(&y) => {
                    p.birth_year = Some(y);
                    Field::Applied
                }
                _ => Field::Malformed,
            }
        }
        n if n == FIELD_GENDER.as_bytes() => {
            p.gender = match value {
                b"M" => Gender::Male,
                b"F" => Gender::Female,
                b"O" => Gender::Other,
                _ => return Field::Malformed,
            };
            Field::Applied
        }
        n if n == FIELD_LAST_SEEN.as_bytes() => match parse_u32(value) {
            Some(t) => {
                p.last_seen = Some(t);
                Field::Applied
            }
            None => Field::Malformed,
        },
        _ => Field::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(p: &mut ProfileData, n: &str, v: &str) -> Field {
        apply_field(p, n.as_bytes(), v.as_bytes(), 100)
    }

    #[test]
    fn well_formed_fields_apply() {
        let mut p = ProfileData::default();
        assert_eq!(apply(&mut p, "seg", "1:500,20:1000,3:0"), Field::Applied);
        assert_eq!(p.segments, vec![(1, 500), (20, 1000), (3, 0)]);
        assert_eq!(apply(&mut p, "yob", "1985"), Field::Applied);
        assert_eq!(apply(&mut p, "gender", "F"), Field::Applied);
        assert_eq!(apply(&mut p, "ls", "1764000000"), Field::Applied);
        assert_eq!(apply(&mut p, "f:7:490000", "3"), Field::Applied);
        assert_eq!(apply(&mut p, "f:7:99", "3"), Field::Expired);
        assert_eq!(apply(&mut p, "seg", ""), Field::Applied);
        assert_eq!(apply(&mut p, "future_field", "x"), Field::Unknown);
        assert_eq!(p.birth_year, Some(1985));
        assert_eq!(p.gender, Gender::Female);
        assert_eq!(p.last_seen, Some(1_764_000_000));
        assert_eq!(
            p.freq,
            vec![FreqBucket {
                campaign: 7,
                hour: 490_000,
                count: 3
            }]
        );
    }

    #[test]
    fn malformed_values_are_skipped_whole() {
        let mut p = ProfileData::default();
        for (n, v) in [
            ("seg", "1:500,x:3"),
            ("seg", "1:1001"),
            ("seg", "1"),
            ("seg", "1:500,"),
            ("seg", "-1:5"),
            ("seg", "99999999999:5"),
            ("yob", "85"),
            ("yob", "abcd"),
            ("gender", "male"),
            ("ls", "-5"),
            ("ls", "1e9"),
            ("f:7:490000", "-1"),
            ("f:7", "1"),
            ("f:x:490000", "1"),
            ("f:7:490000", "1.5"),
        ] {
            assert_eq!(apply(&mut p, n, v), Field::Malformed, "{n}={v}");
        }
        assert_eq!(
            p,
            ProfileData::default(),
            "nothing of a malformed value is kept"
        );
    }
}

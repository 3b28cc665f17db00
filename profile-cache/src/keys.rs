//! The Redis key layout and value encoding of profiles (see `docs/PROFILES.md`): names and
//! formatting helpers shared by the replica and by anything that writes profiles (the
//! `helios-profiles` tool, the billing path, tests).
//!
//! Owns only names and text formats; no I/O. Every writer must follow the contract in
//! `docs/PROFILES.md`: change the hash, then `XADD {ns}:profile:changes * k {user_id}`.

use std::fmt::Write as _;

/// Namespace in front of every key (`helios:profile:…`). Tests use their own.
pub const DEFAULT_NAMESPACE: &str = "helios";
/// Field: interest segments, `"id:weight,id:weight"` (ids u32, weights 0–1000).
pub const FIELD_SEGMENTS: &str = "seg";
/// Field: year of birth, decimal (1900–2154).
pub const FIELD_BIRTH_YEAR: &str = "yob";
/// Field: gender, `M`, `F` or `O`.
pub const FIELD_GENDER: &str = "gender";
/// Field: last time the user was seen, unix seconds (decimal).
pub const FIELD_LAST_SEEN: &str = "ls";
/// Field prefix of frequency counters: `f:{campaign_id}:{unix_hour}` = impressions (HINCRBY).
pub const FIELD_FREQ_PREFIX: &str = "f:";
/// Field of a change-stream entry that names the user id changed.
pub const STREAM_FIELD: &str = "k";
/// The one user id that cannot be stored: its key is the change stream's.
pub const RESERVED_USER_ID: &str = "changes";

/// `{ns}:profile:` — the prefix of every profile hash key.
pub fn profile_prefix(ns: &str) -> String {
    format!("{ns}:profile:")
}

/// `{ns}:profile:{user_id}` — the profile hash of a user.
pub fn profile_key(ns: &str, user_id: &str) -> String {
    format!("{ns}:profile:{user_id}")
}

/// `{ns}:profile:changes` — the change stream.
pub fn changes_stream(ns: &str) -> String {
    format!("{ns}:profile:changes")
}

/// `f:{campaign}:{unix_hour}` — the frequency counter field of a campaign in one clock hour.
pub fn freq_field(campaign: u32, unix_hour: u64) -> String {
    format!("{FIELD_FREQ_PREFIX}{campaign}:{unix_hour}")
}

/// Appends `"id:weight,id:weight"` to `out`.
pub fn format_segments(segments: &[(u32, u16)], out: &mut String) {
    for (i, (id, w)) in segments.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{id}:{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        assert_eq!(profile_key("helios", "abc"), "helios:profile:abc");
        assert_eq!(changes_stream("helios"), "helios:profile:changes");
        assert_eq!(
            profile_key("helios", RESERVED_USER_ID),
            changes_stream("helios")
        );
        assert_eq!(freq_field(42, 490_123), "f:42:490123");
        let mut s = String::new();
        format_segments(&[(1, 500), (20, 1000)], &mut s);
        assert_eq!(s, "1:500,20:1000");
    }
}

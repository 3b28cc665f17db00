//! [`ProfileView`]: what the decision reads of a user's profile. Implemented by the profile
//! cache's records; the shard never knows where the data lives.

/// A user's profile as the decision sees it. Implementations must not allocate or block.
pub trait ProfileView {
    /// Weight (0–1000) of an interest segment, or `None` when the user is not in it.
    fn segment_weight(&self, segment: u32) -> Option<u16>;
    /// Impressions of `campaign` this user has seen since `since_unix_s` (replicated count).
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32;
}

/// A profile with nothing in it (tests; users never seen).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyProfile;

impl ProfileView for EmptyProfile {
    fn segment_weight(&self, _segment: u32) -> Option<u16> {
        None
    }
    fn impressions_since(&self, _campaign: u32, _since_unix_s: u64) -> u32 {
        0
    }
}

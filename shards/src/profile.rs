//! [`ProfileView`]: what the decision reads of a user's profile. Implemented by the profile
//! cache's records; the shard never knows where the data lives.

/// A user's profile as the decision sees it. Implementations must not allocate or block.
pub trait ProfileView {
    /// Weight (0–1000) of an interest segment, or `None` when the user is not in it.
    fn segment_weight(&self, segment: u32) -> Option<u16>;
    /// Impressions of `campaign` this user has seen since `since_unix_s` (replicated count).
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32;
    /// Unix seconds up to which `impressions_since` includes every impression (the replica's
    /// replication point). The shard adds its own wins after this point. The default (0) makes
    /// the shard add every local win it remembers: never under-counts, may cap a little early.
    fn replicated_until_unix_s(&self) -> u64 {
        0
    }
    /// How old the replica's data is (ms since the last change applied). Campaigns with a
    /// frequency cap treat a profile older than their `max_profile_age_ms` as stale.
    fn replica_age_ms(&self) -> u64 {
        0
    }
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

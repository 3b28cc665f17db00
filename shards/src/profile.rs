//! [`ProfileView`]: what the decision reads of a user's profile. Implemented by the profile
//! cache's records; the shard never knows where the data lives. [`ProfileSource`]: where a
//! decision gets that profile, at the moment it first needs it.

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

impl<T: ProfileView + ?Sized> ProfileView for &T {
    #[inline]
    fn segment_weight(&self, segment: u32) -> Option<u16> {
        (**self).segment_weight(segment)
    }
    #[inline]
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32 {
        (**self).impressions_since(campaign, since_unix_s)
    }
    #[inline]
    fn replicated_until_unix_s(&self) -> u64 {
        (**self).replicated_until_unix_s()
    }
    #[inline]
    fn replica_age_ms(&self) -> u64 {
        (**self).replica_age_ms()
    }
}

/// Where a decision gets the user's profile ([`crate::Shard::decide_from`]). The decision asks
/// for it late — once, after its request-level pre-filters (privacy, seat, currency, the
/// index's country/device/OS/inventory/category restriction), and only when the request's privacy
/// signals allow personal data — so a caller that started fetching the profile's memory early
/// (a prefetch) lets that work run while the memory arrives. Implementations must not allocate,
/// lock or block.
pub trait ProfileSource {
    /// The profile as the decision reads it (held until the decision returns).
    type Profile<'s>: ProfileView + 's
    where
        Self: 's;
    /// Called once in a decision that may use personal data, after it has hashed the
    /// request's keys (country, device, inventory, categories: most of the time before the
    /// lookup) and before the index restriction — the place to advance an early fetch (e.g.
    /// from the index slot, which has had time to arrive, to the record). Not called for a
    /// request refused first (seat, currency). The default does nothing.
    #[inline]
    fn prepare(&self) {}
    /// The user's profile, or `None` (no profile). Called at most once per decision.
    fn fetch(&self) -> Option<Self::Profile<'_>>;
}

/// A profile looked up before the decision (or none): what [`crate::Shard::decide`] takes.
impl<'p> ProfileSource for Option<&'p dyn ProfileView> {
    type Profile<'s>
        = &'p dyn ProfileView
    where
        Self: 's;
    #[inline]
    fn fetch(&self) -> Option<&'p dyn ProfileView> {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct One(u16);
    impl ProfileView for One {
        fn segment_weight(&self, segment: u32) -> Option<u16> {
            (segment == 1).then_some(self.0)
        }
        fn impressions_since(&self, _: u32, _: u64) -> u32 {
            3
        }
        fn replica_age_ms(&self) -> u64 {
            9
        }
    }

    /// Counts how often it is asked (a decision asks at most once).
    struct Counted<'a>(&'a One, Cell<u32>);
    impl ProfileSource for Counted<'_> {
        type Profile<'s>
            = &'s One
        where
            Self: 's;
        fn fetch(&self) -> Option<&One> {
            self.1.set(self.1.get() + 1);
            Some(self.0)
        }
    }

    #[test]
    fn references_and_options_read_through() {
        let one = One(700);
        let r: &dyn ProfileView = &one;
        assert_eq!((&r).segment_weight(1), Some(700));
        assert_eq!((&r).impressions_since(0, 0), 3);
        assert_eq!((&r).replica_age_ms(), 9);
        let some: Option<&dyn ProfileView> = Some(&one);
        assert_eq!(some.fetch().map(|p| p.segment_weight(1)), Some(Some(700)));
        let none: Option<&dyn ProfileView> = None;
        assert!(none.fetch().is_none());
        let c = Counted(&one, Cell::new(0));
        c.prepare();
        assert_eq!(c.fetch().map(|p| p.segment_weight(2)), Some(None));
        assert_eq!(c.1.get(), 1);
    }
}

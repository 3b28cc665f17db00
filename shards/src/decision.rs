//! [`Shard::decide`]: one request in, one [`Decision`] out, written into a caller-owned value so
//! that nothing is allocated per request.

use std::sync::Arc;

use arrayvec::ArrayVec;
use codec::event::NoBidReason;
use codec::request::MAX_IMPS;
use codec::{Currency, Micros, ValidRequest};

use crate::campaign::{CompiledSet, Format, Status};
use crate::profile::ProfileView;

/// One bid on one imp. Indices point into the shard's current [`CompiledSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpBid {
    pub imp_index: u8,
    pub campaign_index: u32,
    pub creative_index: u32,
    pub campaign_id: u32,
    pub creative_id: u32,
    pub advertiser_id: u32,
    pub price: Micros,
    pub currency: Currency,
}

/// The outcome for a whole request: bids (at most one per imp) or the reason for none.
#[derive(Debug, Default)]
pub struct Decision {
    pub bids: ArrayVec<ImpBid, MAX_IMPS>,
    pub no_bid: Option<NoBidReason>,
}

impl Decision {
    pub fn clear(&mut self) {
        self.bids.clear();
        self.no_bid = None;
    }
}

/// One core's bidding state. Owned by that core's thread alone.
#[derive(Debug)]
pub struct Shard {
    core: u16,
    set: Arc<CompiledSet>,
}

impl Shard {
    pub fn new(core: u16, set: Arc<CompiledSet>) -> Shard {
        Shard { core, set }
    }

    pub fn core(&self) -> u16 {
        self.core
    }

    /// Swaps in a new campaign set; call between requests.
    pub fn install(&mut self, set: Arc<CompiledSet>) {
        self.set = set;
    }

    /// The campaign set decisions are made against; `ImpBid` indices point into it.
    pub fn set(&self) -> &CompiledSet {
        &self.set
    }

    /// Decides `req` at wall-clock time `now_unix_ns`. `profile` is `None` when there is no
    /// consent or no profile.
    pub fn decide(
        &mut self,
        req: &ValidRequest<'_>,
        _profile: Option<&dyn ProfileView>,
        _now_unix_ns: u64,
        out: &mut Decision,
    ) {
        out.clear();
        let country = req
            .req()
            .device
            .as_ref()
            .and_then(|d| d.geo.as_ref())
            .and_then(|g| g.country.as_deref());
        let mut best_reason = NoBidReason::NoEligibleCampaign;
        for (i, imp) in req.req().imp.iter().enumerate() {
            let floor = req.imps()[i].floor;
            let mut best: Option<ImpBid> = None;
            for (ci, c) in self.set.campaigns.iter().enumerate() {
                if c.status != Status::Active {
                    continue;
                }
                if !c.countries.is_empty()
                    && !country.is_some_and(|k| c.countries.iter().any(|x| x == k))
                {
                    continue;
                }
                let Some((cri, cr)) =
                    c.creatives
                        .iter()
                        .enumerate()
                        .find(|(_, cr)| match cr.format {
                            Format::Banner { w, h } => imp.banner.as_ref().is_some_and(|b| {
                                (b.w == Some(w) && b.h == Some(h))
                                    || b.format.iter().any(|f| f.w == w && f.h == h)
                            }),
                            Format::Video => imp.video.is_some(),
                            Format::Native => imp.native.is_some(),
                        })
                else {
                    continue;
                };
                let price = Micros(c.bid_cpm_micros);
                if price < floor {
                    best_reason = NoBidReason::BelowFloor;
                    continue;
                }
                if best.is_none_or(|b| price > b.price) {
                    best = Some(ImpBid {
                        imp_index: i as u8,
                        campaign_index: ci as u32,
                        creative_index: cri as u32,
                        campaign_id: c.id,
                        creative_id: cr.id,
                        advertiser_id: c.advertiser_id,
                        price,
                        currency: Currency::USD,
                    });
                }
            }
            if let Some(b) = best {
                out.bids.push(b);
            }
        }
        if out.bids.is_empty() {
            out.no_bid = Some(best_reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"{"version":1,"campaigns":[
      {"id":1,"advertiser_id":10,"status":"active","bid_cpm_micros":2000000,"total_budget_micros":1000000000,
       "creatives":[{"id":11,"format":{"type":"banner","w":300,"h":250},"adomain":["a.example"],"adm":"<a/>"}]},
      {"id":2,"advertiser_id":20,"status":"active","bid_cpm_micros":3000000,"total_budget_micros":1000000000,
       "countries":["DEU"],
       "creatives":[{"id":21,"format":{"type":"banner","w":300,"h":250},"adm":"<b/>"}]}]}"#;

    fn decide(json: &str) -> Decision {
        let mut s = Shard::new(0, CompiledSet::parse(SET.as_bytes()).unwrap());
        let req = codec::decode_valid(json.as_bytes()).unwrap();
        let mut d = Decision::default();
        s.decide(&req, None, 0, &mut d);
        d
    }

    #[test]
    fn picks_the_highest_eligible_price() {
        let d = decide(
            r#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}],"device":{"geo":{"country":"DEU"}}}"#,
        );
        assert_eq!(d.bids[0].campaign_id, 2);
        let d = decide(
            r#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}],"device":{"geo":{"country":"FRA"}}}"#,
        );
        assert_eq!(d.bids[0].campaign_id, 1);
        assert_eq!(d.bids[0].price, Micros(2_000_000));
    }

    #[test]
    fn says_why_not() {
        let d = decide(r#"{"id":"r","imp":[{"id":"1","banner":{"w":728,"h":90}}]}"#);
        assert_eq!(d.no_bid, Some(NoBidReason::NoEligibleCampaign));
        let d = decide(r#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":5}]}"#);
        assert_eq!(d.no_bid, Some(NoBidReason::BelowFloor));
    }
}

//! The OpenRTB 2.6 bid request as the bidder reads it, borrowing from the request buffer.
//!
//! Only fields the bidder uses are decoded; every other field is skipped. Lists are bounded
//! (see [`crate::bounded`]); numbers keep their OpenRTB types until validation turns prices into
//! [`crate::Micros`]. This module holds data only: rules live in [`crate::validate`].

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};

use crate::bounded::{FillBlockList, FillCapped};

use crate::bounded::{BlockList, Capped};
use crate::str::Str;

/// Most imps one request may carry; more is refused by validation.
pub const MAX_IMPS: usize = 8;
/// Entries kept per block list (`bcat`, `badv`, `bapp`); more is refused by validation.
pub const MAX_BLOCKS: usize = 256;

/// Marks that an object was present (`native`, `audio`) without decoding its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present)
    }
}

/// A bid request. Deserialised in place by a hand-written visitor (below), not derived: the
/// struct is several kilobytes of inline lists, and serde's derived code would move it (and
/// its `imp` list) through several by-value returns.
#[derive(Debug, Default)]
pub struct BidRequest<'a> {
    pub id: Option<Str<'a>>,
    pub imp: Capped<Imp<'a>, MAX_IMPS>,
    pub site: Option<Site<'a>>,
    pub app: Option<App<'a>>,
    pub device: Option<Device<'a>>,
    pub user: Option<User<'a>>,
    pub regs: Option<Regs<'a>>,
    pub source: Option<Source<'a>>,
    /// Milliseconds the exchange waits for our answer, network included.
    pub tmax: Option<u32>,
    /// Auction type: 1 first price, 2 second price plus (the default), >500 exchange-specific.
    pub at: Option<u32>,
    pub cur: Capped<Str<'a>, 8>,
    pub bcat: BlockList<MAX_BLOCKS>,
    pub badv: BlockList<MAX_BLOCKS>,
    pub bapp: BlockList<MAX_BLOCKS>,
    pub wseat: Capped<Str<'a>, 16>,
    pub test: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Imp<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(default)]
    pub banner: Option<Banner>,
    #[serde(borrow, default)]
    pub video: Option<Video<'a>>,
    #[serde(default)]
    pub native: Option<Present>,
    #[serde(default)]
    pub audio: Option<Present>,
    #[serde(default)]
    pub bidfloor: Option<f64>,
    #[serde(borrow, default)]
    pub bidfloorcur: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub tagid: Option<Str<'a>>,
    #[serde(default)]
    pub secure: Option<u8>,
    /// 1 when the ad is interstitial or full screen.
    #[serde(default)]
    pub instl: Option<u8>,
    #[serde(borrow, default)]
    pub pmp: Option<Pmp<'a>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Format {
    #[serde(default)]
    pub w: u32,
    #[serde(default)]
    pub h: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct Banner {
    #[serde(default)]
    pub w: Option<u32>,
    #[serde(default)]
    pub h: Option<u32>,
    #[serde(default)]
    pub format: Capped<Format, 16>,
    /// Blocked creative attributes (OpenRTB/AdCOM list).
    #[serde(default)]
    pub battr: Capped<u16, 32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Video<'a> {
    #[serde(borrow, default)]
    pub mimes: Capped<Str<'a>, 8>,
    #[serde(default)]
    pub minduration: Option<u32>,
    #[serde(default)]
    pub maxduration: Option<u32>,
    #[serde(default)]
    pub protocols: Capped<u16, 16>,
    /// 2.6 video placement subtype: 1 instream, 2 accompanying content, 3 interstitial,
    /// 4 no content / standalone.
    #[serde(default)]
    pub plcmt: Option<u8>,
    /// 1 linear (in-stream), 2 non-linear (overlay).
    #[serde(default)]
    pub linearity: Option<u8>,
    #[serde(default)]
    pub w: Option<u32>,
    #[serde(default)]
    pub h: Option<u32>,
    #[serde(default)]
    pub battr: Capped<u16, 32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pmp<'a> {
    #[serde(default)]
    pub private_auction: Option<u8>,
    #[serde(borrow, default)]
    pub deals: Capped<Deal<'a>, 4>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Deal<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(default)]
    pub bidfloor: Option<f64>,
    #[serde(borrow, default)]
    pub bidfloorcur: Option<Str<'a>>,
    /// Auction type for this deal: 1 first price, 2 second price, 3 the deal's fixed price.
    #[serde(default)]
    pub at: Option<u8>,
    #[serde(borrow, default)]
    pub wseat: Capped<Str<'a>, 4>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Publisher<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Site<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub domain: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub cat: Capped<Str<'a>, 16>,
    #[serde(borrow, default)]
    pub page: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub publisher: Option<Publisher<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct App<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub bundle: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub domain: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub cat: Capped<Str<'a>, 16>,
    #[serde(borrow, default)]
    pub publisher: Option<Publisher<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Geo<'a> {
    /// ISO-3166-1 alpha-3.
    #[serde(borrow, default)]
    pub country: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub region: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub city: Option<Str<'a>>,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Device<'a> {
    #[serde(borrow, default)]
    pub ua: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub ip: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub ipv6: Option<Str<'a>>,
    #[serde(default)]
    pub devicetype: Option<u8>,
    #[serde(borrow, default)]
    pub os: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub osv: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub make: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub model: Option<Str<'a>>,
    /// ISO-639-1 alpha-2 browser language.
    #[serde(borrow, default)]
    pub language: Option<Str<'a>>,
    /// 0 unknown, 1 ethernet, 2 wifi, 3 cellular unknown, 4 2G, 5 3G, 6 4G, 7 5G.
    #[serde(default)]
    pub connectiontype: Option<u8>,
    #[serde(borrow, default)]
    pub ifa: Option<Str<'a>>,
    #[serde(default)]
    pub lmt: Option<u8>,
    #[serde(borrow, default)]
    pub geo: Option<Geo<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Uid<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Eid<'a> {
    #[serde(borrow, default)]
    pub source: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub uids: Capped<Uid<'a>, 2>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Segment<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Data<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub segment: Capped<Segment<'a>, 16>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserExt<'a> {
    /// OpenRTB 2.5 location of the TCF consent string.
    #[serde(borrow, default)]
    pub consent: Option<Str<'a>>,
    /// OpenRTB 2.5 (Prebid) location of the extended ids.
    #[serde(borrow, default)]
    pub eids: Capped<Eid<'a>, 4>,
}

#[derive(Debug, Default, Deserialize)]
pub struct User<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub buyeruid: Option<Str<'a>>,
    /// TCF v2 consent string (2.6 location).
    #[serde(borrow, default)]
    pub consent: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub eids: Capped<Eid<'a>, 4>,
    #[serde(borrow, default)]
    pub data: Capped<Data<'a>, 4>,
    #[serde(borrow, default)]
    pub ext: Option<UserExt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegsExt<'a> {
    #[serde(default)]
    pub gdpr: Option<u8>,
    #[serde(borrow, default)]
    pub us_privacy: Option<Str<'a>>,
    /// Pre-2.6 (Prebid) location of the GPP string.
    #[serde(borrow, default)]
    pub gpp: Option<Str<'a>>,
    #[serde(default)]
    pub gpp_sid: Capped<u16, 16>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Regs<'a> {
    #[serde(default)]
    pub coppa: Option<u8>,
    #[serde(default)]
    pub gdpr: Option<u8>,
    #[serde(borrow, default)]
    pub us_privacy: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub gpp: Option<Str<'a>>,
    #[serde(default)]
    pub gpp_sid: Capped<u16, 16>,
    #[serde(borrow, default)]
    pub ext: Option<RegsExt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SchainNode<'a> {
    #[serde(borrow, default)]
    pub asi: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub sid: Option<Str<'a>>,
    #[serde(default)]
    pub hp: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SupplyChain<'a> {
    #[serde(default)]
    pub complete: Option<u8>,
    #[serde(borrow, default)]
    pub nodes: Capped<SchainNode<'a>, 8>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceExt<'a> {
    #[serde(borrow, default)]
    pub schain: Option<SupplyChain<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Source<'a> {
    #[serde(borrow, default)]
    pub tid: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub schain: Option<SupplyChain<'a>>,
    /// OpenRTB 2.5 location of the supply chain.
    #[serde(borrow, default)]
    pub ext: Option<SourceExt<'a>>,
}

impl<'a> BidRequest<'a> {
    /// `regs.gdpr`, falling back to the 2.5 `regs.ext.gdpr`.
    pub fn gdpr(&self) -> Option<u8> {
        let r = self.regs.as_ref()?;
        r.gdpr.or_else(|| r.ext.as_ref().and_then(|e| e.gdpr))
    }
    /// `user.consent`, falling back to the 2.5 `user.ext.consent`.
    pub fn consent(&self) -> Option<&str> {
        let u = self.user.as_ref()?;
        u.consent
            .as_deref()
            .or_else(|| u.ext.as_ref().and_then(|e| e.consent.as_deref()))
    }
    /// `regs.us_privacy`, falling back to the 2.5 `regs.ext.us_privacy`.
    pub fn us_privacy(&self) -> Option<&str> {
        let r = self.regs.as_ref()?;
        r.us_privacy
            .as_deref()
            .or_else(|| r.ext.as_ref().and_then(|e| e.us_privacy.as_deref()))
    }
    /// `regs.gpp`, falling back to the pre-2.6 `regs.ext.gpp`.
    pub fn gpp(&self) -> Option<&str> {
        let r = self.regs.as_ref()?;
        r.gpp
            .as_deref()
            .or_else(|| r.ext.as_ref().and_then(|e| e.gpp.as_deref()))
    }
    /// `regs.gpp_sid`, falling back to the pre-2.6 `regs.ext.gpp_sid` (empty when neither).
    pub fn gpp_sid(&self) -> &[u16] {
        match &self.regs {
            Some(r) if !r.gpp_sid.is_empty() => &r.gpp_sid,
            Some(r) => r.ext.as_ref().map_or(&[], |e| &e.gpp_sid),
            None => &[],
        }
    }
    /// `user.eids`, falling back to the 2.5 `user.ext.eids` (empty when neither).
    pub fn eids(&self) -> &[Eid<'a>] {
        match &self.user {
            Some(u) if !u.eids.is_empty() => &u.eids,
            Some(u) => u.ext.as_ref().map_or(&[], |e| &e.eids),
            None => &[],
        }
    }
    /// `source.schain`, falling back to the 2.5 `source.ext.schain`.
    pub fn schain(&self) -> Option<&SupplyChain<'a>> {
        let s = self.source.as_ref()?;
        s.schain
            .as_ref()
            .or_else(|| s.ext.as_ref().and_then(|e| e.schain.as_ref()))
    }
}

/// The keys of a bid request the bidder reads; `Other` for every key it skips.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Imp,
    Site,
    App,
    Device,
    User,
    Regs,
    Source,
    Tmax,
    At,
    Cur,
    Bcat,
    Badv,
    Bapp,
    Wseat,
    Test,
    Other,
}

impl Field {
    fn of(key: &str) -> Field {
        match key {
            "id" => Field::Id,
            "imp" => Field::Imp,
            "site" => Field::Site,
            "app" => Field::App,
            "device" => Field::Device,
            "user" => Field::User,
            "regs" => Field::Regs,
            "source" => Field::Source,
            "tmax" => Field::Tmax,
            "at" => Field::At,
            "cur" => Field::Cur,
            "bcat" => Field::Bcat,
            "badv" => Field::Badv,
            "bapp" => Field::Bapp,
            "wseat" => Field::Wseat,
            "test" => Field::Test,
            _ => Field::Other,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Imp => "imp",
            Field::Site => "site",
            Field::App => "app",
            Field::Device => "device",
            Field::User => "user",
            Field::Regs => "regs",
            Field::Source => "source",
            Field::Tmax => "tmax",
            Field::At => "at",
            Field::Cur => "cur",
            Field::Bcat => "bcat",
            Field::Badv => "badv",
            Field::Bapp => "bapp",
            Field::Wseat => "wseat",
            Field::Test => "test",
            Field::Other => "(other)",
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::of(v))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Fills a [`BidRequest`] in place from a JSON object. Duplicate known keys are refused (as the
/// derived code would); unknown keys are skipped.
pub(crate) struct FillRequest<'r, 'a>(pub &'r mut BidRequest<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for FillRequest<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FillRequest<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OpenRTB bid request object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let r = self.0;
        let mut seen: u32 = 0;
        while let Some(field) = map.next_key::<Field>()? {
            if field != Field::Other {
                let bit = 1u32 << field as u32;
                if seen & bit != 0 {
                    return Err(M::Error::duplicate_field(field.name()));
                }
                seen |= bit;
            }
            match field {
                Field::Id => r.id = map.next_value()?,
                Field::Imp => map.next_value_seed(FillCapped(&mut r.imp))?,
                Field::Site => r.site = map.next_value()?,
                Field::App => r.app = map.next_value()?,
                Field::Device => r.device = map.next_value()?,
                Field::User => r.user = map.next_value()?,
                Field::Regs => r.regs = map.next_value()?,
                Field::Source => r.source = map.next_value()?,
                Field::Tmax => r.tmax = map.next_value()?,
                Field::At => r.at = map.next_value()?,
                Field::Cur => map.next_value_seed(FillCapped(&mut r.cur))?,
                Field::Bcat => map.next_value_seed(FillBlockList(&mut r.bcat))?,
                Field::Badv => map.next_value_seed(FillBlockList(&mut r.badv))?,
                Field::Bapp => map.next_value_seed(FillBlockList(&mut r.bapp))?,
                Field::Wseat => map.next_value_seed(FillCapped(&mut r.wseat))?,
                Field::Test => r.test = map.next_value()?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BidRequest<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut req = BidRequest::default();
        FillRequest(&mut req).deserialize(d)?;
        Ok(req)
    }
}

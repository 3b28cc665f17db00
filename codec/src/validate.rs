//! Validation: a decoded [`BidRequest`] becomes a [`ValidRequest`] or a [`ValidationError`] that
//! names the field. The bidder only ever sees a `ValidRequest`, so every rule here holds for it.

use arrayvec::ArrayVec;

use crate::money::{Currency, Micros};
use crate::request::{BidRequest, MAX_BLOCKS, MAX_IMPS};

/// Largest width or height accepted for a creative slot, in pixels.
pub const MAX_SLOT_PX: u32 = 10_000;

/// A rule the request broke, naming the field (becomes the HTTP 400 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("missing field: {0}")]
    Missing(&'static str),
    #[error("imp: more than {MAX_IMPS} imps")]
    TooManyImps,
    #[error("imp[{0}].id: duplicate imp id")]
    DuplicateImpId(usize),
    #[error("imp[{0}].bidfloor: must be a finite number >= 0 and <= 1000000")]
    BadFloor(usize),
    #[error("imp[{0}].pmp.deals: a deal floor must be a finite number >= 0 and <= 1000000")]
    BadDealFloor(usize),
    #[error("{field}: unknown currency")]
    UnknownCurrency { field: &'static str },
    #[error("imp[{0}]: size out of range (w and h must be 1..={MAX_SLOT_PX})")]
    AbsurdSize(usize),
    #[error("imp[{0}]: no banner, video, native or audio object")]
    NoMedia(usize),
    #[error("{0}: more than {MAX_BLOCKS} entries; the block list cannot be honoured")]
    BlockListTooLong(&'static str),
    #[error("site and app: a request has one or the other, not both")]
    SiteAndApp,
}

/// What validation derived for one imp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidImp {
    /// `bidfloor` in micros of `floor_cur` (0 when absent).
    pub floor: Micros,
    pub floor_cur: Currency,
}

/// A bid request that passed every rule in this module. Fields are read through [`Self::req`].
#[derive(Debug)]
pub struct ValidRequest<'a> {
    req: BidRequest<'a>,
    imps: ArrayVec<ValidImp, MAX_IMPS>,
}

fn size_ok(w: Option<u32>, h: Option<u32>) -> bool {
    let ok = |v: Option<u32>| v.is_none_or(|v| (1..=MAX_SLOT_PX).contains(&v));
    ok(w) && ok(h)
}

impl<'a> ValidRequest<'a> {
    pub fn new(req: BidRequest<'a>) -> Result<Self, ValidationError> {
        let mut valid = ValidRequest {
            req,
            imps: ArrayVec::new(),
        };
        valid.check()?;
        Ok(valid)
    }

    /// An empty request not yet checked: [`crate::decode_valid`] decodes into it in place, then
    /// calls [`Self::check`] before handing it out.
    pub(crate) fn unchecked_default() -> Self {
        ValidRequest {
            req: BidRequest::default(),
            imps: ArrayVec::new(),
        }
    }

    pub(crate) fn req_mut(&mut self) -> &mut BidRequest<'a> {
        &mut self.req
    }

    /// Applies every rule and derives the per-imp values; on error the value must be dropped.
    pub(crate) fn check(&mut self) -> Result<(), ValidationError> {
        let req = &self.req;
        self.imps.clear();
        if req.id.as_deref().is_none_or(str::is_empty) {
            return Err(ValidationError::Missing("id"));
        }
        if req.imp.is_empty() {
            return Err(ValidationError::Missing("imp"));
        }
        if req.imp.overflowed() {
            return Err(ValidationError::TooManyImps);
        }
        if req.site.is_some() && req.app.is_some() {
            return Err(ValidationError::SiteAndApp);
        }
        for (name, list) in [
            ("bcat", &req.bcat),
            ("badv", &req.badv),
            ("bapp", &req.bapp),
        ] {
            if list.overflowed() {
                return Err(ValidationError::BlockListTooLong(name));
            }
        }
        let imps = &mut self.imps;
        for (i, imp) in req.imp.iter().enumerate() {
            let id = match imp.id.as_deref() {
                Some(id) if !id.is_empty() => id,
                _ => return Err(ValidationError::Missing("imp[].id")),
            };
            if req.imp[..i].iter().any(|o| o.id.as_deref() == Some(id)) {
                return Err(ValidationError::DuplicateImpId(i));
            }
            if imp.banner.is_none()
                && imp.video.is_none()
                && imp.native.is_none()
                && imp.audio.is_none()
            {
                return Err(ValidationError::NoMedia(i));
            }
            let banner_bad = imp.banner.as_ref().is_some_and(|b| {
                !size_ok(b.w, b.h) || b.format.iter().any(|f| !size_ok(Some(f.w), Some(f.h)))
            });
            let video_bad = imp.video.as_ref().is_some_and(|v| !size_ok(v.w, v.h));
            if banner_bad || video_bad {
                return Err(ValidationError::AbsurdSize(i));
            }
            let floor = match imp.bidfloor {
                None => Micros::ZERO,
                Some(f) => Micros::from_f64(f).ok_or(ValidationError::BadFloor(i))?,
            };
            let floor_cur = match imp.bidfloorcur.as_deref() {
                None => Currency::USD,
                Some(c) => Currency::parse(c).ok_or(ValidationError::UnknownCurrency {
                    field: "imp[].bidfloorcur",
                })?,
            };
            if let Some(pmp) = &imp.pmp {
                for d in pmp.deals.iter() {
                    if d.bidfloor.is_some_and(|f| Micros::from_f64(f).is_none()) {
                        return Err(ValidationError::BadDealFloor(i));
                    }
                    if d.bidfloorcur
                        .as_deref()
                        .is_some_and(|c| Currency::parse(c).is_none())
                    {
                        return Err(ValidationError::UnknownCurrency {
                            field: "imp[].pmp.deals[].bidfloorcur",
                        });
                    }
                }
            }
            imps.push(ValidImp { floor, floor_cur });
        }
        if req.cur.iter().any(|c| Currency::parse(c).is_none()) {
            return Err(ValidationError::UnknownCurrency { field: "cur" });
        }
        Ok(())
    }

    /// The decoded request (every rule above holds for it).
    pub fn req(&self) -> &BidRequest<'a> {
        &self.req
    }
    /// The request id (validated non-empty).
    pub fn id(&self) -> &str {
        self.req.id.as_deref().unwrap_or_default()
    }
    /// Per-imp derived values, index-aligned with `req().imp`.
    pub fn imps(&self) -> &[ValidImp] {
        &self.imps
    }
    /// Currencies the exchange accepts in the response (`cur`), USD when unspecified.
    pub fn accepts(&self, c: Currency) -> bool {
        if self.req.cur.is_empty() {
            c == Currency::USD
        } else {
            self.req.cur.iter().any(|x| &**x == c.as_str())
        }
    }
    pub fn is_test(&self) -> bool {
        self.req.test == Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    fn v(json: &str) -> Result<ValidRequest<'_>, ValidationError> {
        ValidRequest::new(decode(json.as_bytes()).expect("decodes"))
    }

    #[test]
    fn minimal_banner_request_is_valid() {
        let r = v(r#"{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":0.5}]}"#)
            .unwrap();
        assert_eq!(r.id(), "r1");
        assert_eq!(r.imps()[0].floor, Micros(500_000));
        assert_eq!(r.imps()[0].floor_cur, Currency::USD);
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(
            v(r#"{"imp":[{"id":"1","banner":{}}]}"#).unwrap_err(),
            ValidationError::Missing("id")
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[]}"#).unwrap_err(),
            ValidationError::Missing("imp")
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[{"id":"1","banner":{}},{"id":"1","banner":{}}]}"#).unwrap_err(),
            ValidationError::DuplicateImpId(1)
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":-1}]}"#).unwrap_err(),
            ValidationError::BadFloor(0)
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[{"id":"1","banner":{},"bidfloorcur":"XYZ"}]}"#).unwrap_err(),
            ValidationError::UnknownCurrency {
                field: "imp[].bidfloorcur"
            }
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[{"id":"1","banner":{"w":300000,"h":250}}]}"#).unwrap_err(),
            ValidationError::AbsurdSize(0)
        );
        assert_eq!(
            v(r#"{"id":"r","imp":[{"id":"1"}]}"#).unwrap_err(),
            ValidationError::NoMedia(0)
        );
    }
}

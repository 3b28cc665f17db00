//! `codec`: bytes from the exchange in, typed values out; typed decisions in, bytes out.
//!
//! Owns: the OpenRTB 2.6 request model (borrowing from the request buffer), its validation into
//! [`ValidRequest`], the bid-response encoder (into a reused buffer), money as integer micros, and
//! the fixed-layout event records that leave the hot path.
//! Must never: do I/O, allocate on the warm decode/validate/encode path (escaped strings aside),
//! or panic on any input.

pub mod bounded;
pub mod event;
pub mod money;
pub mod request;
pub mod response;
pub mod str;
pub mod validate;

pub use bounded::{BlockList, Capped};
pub use money::{Currency, Micros};
pub use request::BidRequest;
pub use response::{Bid, BidResponse, ResponseEncoder, SeatBid};
pub use str::Str;
pub use validate::{ValidRequest, ValidationError};

/// Why a body could not be turned into a [`BidRequest`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON of the OpenRTB shape (wrong type, truncated, too deep, …).
    #[error("invalid OpenRTB JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes an OpenRTB 2.6 bid request, borrowing strings from `body` wherever no JSON escape
/// forces a copy. Unknown fields are skipped. serde_json's recursion limit (128) bounds nesting.
pub fn decode(body: &[u8]) -> Result<BidRequest<'_>, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

/// Decode then validate: what the bidder gets.
pub fn decode_valid(body: &[u8]) -> Result<ValidRequest<'_>, RequestError> {
    let req = decode(body)?;
    Ok(ValidRequest::new(req)?)
}

/// Any reason a request is refused (→ HTTP 400 with [`RequestError`]'s message).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

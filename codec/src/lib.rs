//! `codec`: bytes from the exchange in, typed values out; typed decisions in, bytes out.
//!
//! Owns: the OpenRTB 2.6 request model (borrowing from the request buffer), its validation into
//! [`ValidRequest`], the bid-response encoder (into a reused buffer), money as integer micros, and
//! the fixed-layout event records that leave the hot path.
//! Must never: do I/O, allocate on the warm decode/validate/encode path (escaped strings aside),
//! or panic on any input.

pub mod bounded;
pub mod event;
mod json;
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

/// Largest body [`decode`] accepts, in bytes. Real bid requests are 0.5–10 KB; a body this big
/// is refused before any parsing, so its cost is bounded by a length comparison.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Deepest nesting of arrays and objects accepted anywhere in a body, skipped values included.
/// The decoder skips unknown values recursively (about 400 bytes of stack per level in a
/// release build), so this bounds its stack use: decoding fits a 512 KiB stack (tested in
/// `tests/corpus.rs`). Real requests nest about 6 deep.
pub const MAX_DEPTH: usize = 512;

/// Why a body could not be turned into a [`BidRequest`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    #[error("body too large: {len} bytes (at most {MAX_BODY_BYTES})")]
    TooLarge { len: usize },
    /// JSON must be UTF-8 (RFC 8259), everywhere, including fields the bidder skips.
    #[error("invalid UTF-8 at byte {at}")]
    Utf8 { at: usize },
    /// The body does not start with `{` (after whitespace): a bid request is a JSON object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
    /// The body is not JSON of the OpenRTB shape (wrong type, truncated, …).
    #[error("invalid OpenRTB JSON: {0}")]
    Json(#[from] json::JsonError),
}

/// Decodes an OpenRTB 2.6 bid request, borrowing strings from `body` wherever no JSON escape
/// forces a copy. Unknown fields are skipped. Refused before parsing: bodies over
/// [`MAX_BODY_BYTES`], bodies that are not UTF-8 or not an object, and bodies nesting deeper
/// than [`MAX_DEPTH`].
///
/// A `BidRequest` is large (its lists are inline): borrow it (`match &decode(..)`), don't move it.
pub fn decode(body: &[u8]) -> Result<BidRequest<'_>, DecodeError> {
    let mut req = BidRequest::default();
    decode_into(body, &mut req)?;
    Ok(req)
}

/// [`decode`] into `req`, which must be `BidRequest::default()`: the request is written where it
/// lives, not built elsewhere and moved.
fn decode_into<'a>(body: &'a [u8], req: &mut BidRequest<'a>) -> Result<(), DecodeError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(DecodeError::TooLarge { len: body.len() });
    }
    // serde would accept a top-level array as a positional struct: a bid request is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(DecodeError::NotAnObject);
    }
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::Utf8 {
        at: e.valid_up_to(),
    })?;
    json::check_depth(body)?;
    json::fill(text, req)
}

/// Decode then validate, then `f` on the result where it was decoded: the request (~20 KB of
/// inline lists) is never moved — [`decode_valid`] returns it by value, which costs a copy of
/// it on return and another where the caller binds it (two 20 KB `memcpy`s per request, ≈15% of
/// the bidder's instructions per request when measured, bench/RESULTS.md).
pub fn with_valid<R>(
    body: &[u8],
    f: impl for<'v> FnOnce(Result<&'v ValidRequest<'_>, RequestError>) -> R,
) -> R {
    let mut valid = ValidRequest::unchecked_default();
    if let Err(e) = decode_into(body, valid.req_mut()) {
        return f(Err(e.into()));
    }
    if let Err(e) = valid.check() {
        return f(Err(e.into()));
    }
    f(Ok(&valid))
}

/// Decode then validate: what the bidder gets.
pub fn decode_valid(body: &[u8]) -> Result<ValidRequest<'_>, RequestError> {
    let mut valid = ValidRequest::unchecked_default();
    decode_into(body, valid.req_mut())?;
    valid.check()?;
    Ok(valid)
}

/// Any reason a request is refused (→ HTTP 400 with [`RequestError`]'s message).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

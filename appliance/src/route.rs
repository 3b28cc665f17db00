//! Routing of the bid port's paths and parsing of notice queries. Pure functions, no state.
//!
//! Must never: allocate or panic on input. Values are returned raw (still percent-encoded):
//! whoever checks a notice's signature needs them exactly as signed.

use arrayvec::ArrayVec;

/// Most parameters a notice query may carry (past it: 400).
pub const MAX_QUERY_PAIRS: usize = 32;
/// Longest exchange name in `/openrtb2/bid/{exchange}` (fits `Event::exchange`).
pub const MAX_EXCHANGE_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Win,
    Billing,
    Loss,
    Click,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 4] = [
        NoticeKind::Win,
        NoticeKind::Billing,
        NoticeKind::Loss,
        NoticeKind::Click,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Win => "win",
            NoticeKind::Billing => "billing",
            NoticeKind::Loss => "loss",
            NoticeKind::Click => "click",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /openrtb2/bid` (exchange "") or `/openrtb2/bid/{exchange}`.
    Bid {
        exchange: &'a str,
    },
    /// `GET|POST /notice/{win,billing,loss,click}`.
    Notice(NoticeKind),
    Unknown,
}

fn exchange_ok(x: &str) -> bool {
    !x.is_empty()
        && x.len() <= MAX_EXCHANGE_LEN
        && x.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/openrtb2/bid") {
        return match rest {
            "" | "/" => Route::Bid { exchange: "" },
            _ => match rest.strip_prefix('/') {
                Some(x) if exchange_ok(x) => Route::Bid { exchange: x },
                _ => Route::Unknown,
            },
        };
    }
    match path {
        "/notice/win" => Route::Notice(NoticeKind::Win),
        "/notice/billing" => Route::Notice(NoticeKind::Billing),
        "/notice/loss" => Route::Notice(NoticeKind::Loss),
        "/notice/click" => Route::Notice(NoticeKind::Click),
        _ => Route::Unknown,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("notice: no parameters")]
    Empty,
    #[error("notice: more than {MAX_QUERY_PAIRS} parameters")]
    TooMany,
}

/// The `key=value` pairs of a query, raw, in order. A key without `=` has the value "".
pub fn query_pairs(q: &str) -> Result<ArrayVec<(&str, &str), MAX_QUERY_PAIRS>, QueryError> {
    let mut out = ArrayVec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let kv = part.split_once('=').unwrap_or((part, ""));
        out.try_push(kv).map_err(|_| QueryError::TooMany)?;
    }
    if out.is_empty() {
        return Err(QueryError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/openrtb2/bid"), Route::Bid { exchange: "" });
        assert_eq!(route("/openrtb2/bid/"), Route::Bid { exchange: "" });
        assert_eq!(
            route("/openrtb2/bid/adx-1"),
            Route::Bid { exchange: "adx-1" }
        );
        assert_eq!(route("/openrtb2/bid/a/b"), Route::Unknown);
        assert_eq!(route("/openrtb2/bidder"), Route::Unknown);
        assert_eq!(
            route(&format!("/openrtb2/bid/{}", "x".repeat(33))),
            Route::Unknown
        );
        assert_eq!(route("/notice/win"), Route::Notice(NoticeKind::Win));
        assert_eq!(route("/notice/billing"), Route::Notice(NoticeKind::Billing));
        assert_eq!(route("/notice/loss"), Route::Notice(NoticeKind::Loss));
        assert_eq!(route("/notice/click"), Route::Notice(NoticeKind::Click));
        assert_eq!(route("/notice/view"), Route::Unknown);
        assert_eq!(route("/"), Route::Unknown);
    }

    #[test]
    fn queries() {
        let q = query_pairs("p=${AUCTION_PRICE}&r=req%201&flag&&s=x").unwrap();
        assert_eq!(
            &q[..],
            &[
                ("p", "${AUCTION_PRICE}"),
                ("r", "req%201"),
                ("flag", ""),
                ("s", "x")
            ]
        );
        assert_eq!(query_pairs(""), Err(QueryError::Empty));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(query_pairs(&many), Err(QueryError::TooMany));
    }
}

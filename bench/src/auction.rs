//! The exchange's side of an auction: who wins an imp at what clearing price, why the others
//! lost, and the OpenRTB notice macros filled in for each of them.
//!
//! Pure functions over integer micros; no I/O. Used by `helios-exchange` on its one thread.
//! Must never: use floats for money (prices arrive as floats from the bid response and are turned
//! into [`Micros`] at the edge, by the caller).

use codec::Micros;

/// OpenRTB loss reason codes used here (OpenRTB 2.6, list 5.25).
pub mod loss {
    pub const WON: u32 = 0;
    pub const BELOW_FLOOR: u32 = 100;
    pub const LOST_TO_HIGHER_BID: u32 = 102;
}

/// Auction type (`BidRequest.at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuctionKind {
    /// The winner pays its own bid (`at = 1`).
    FirstPrice,
    /// The winner pays the second-highest eligible bid (or the floor) plus an increment, never
    /// more than its own bid (`at = 2`).
    SecondPrice,
}

/// One bid on one imp as the auction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub price: Micros,
}

/// The result for one bid of the imp, index-aligned with the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Result {
    /// [`loss::WON`] for the winner, else the loss reason.
    pub loss: u32,
    /// Clearing price (the winner's, for everyone).
    pub clearing: Micros,
    /// Lowest bid that would have won, given the others (`${AUCTION_MIN_TO_WIN}`).
    pub min_to_win: Micros,
}

/// Runs the auction of one imp. `out` receives one [`Result`] per entry (cleared first). Returns
/// the index of the winner, if any bid reached the floor. Ties go to the earlier entry (which
/// arrived first), so results are deterministic.
pub fn run(
    kind: AuctionKind,
    floor: Micros,
    increment: Micros,
    entries: &[Entry],
    out: &mut Vec<Result>,
) -> Option<usize> {
    out.clear();
    let mut best: Option<usize> = None;
    let mut second: Option<Micros> = None;
    for (i, e) in entries.iter().enumerate() {
        if e.price < floor || e.price.0 <= 0 {
            continue;
        }
        match best {
            Some(b) if entries[b].price >= e.price => {
                second = Some(second.map_or(e.price, |s| s.max(e.price)));
            }
            Some(b) => {
                second = Some(entries[b].price);
                best = Some(i);
            }
            None => best = Some(i),
        }
    }
    let clearing = match (best, kind) {
        (None, _) => Micros::ZERO,
        (Some(b), AuctionKind::FirstPrice) => entries[b].price,
        (Some(b), AuctionKind::SecondPrice) => {
            let base = second.unwrap_or(floor).max(floor);
            base.saturating_add(increment).min(entries[b].price)
        }
    };
    for (i, e) in entries.iter().enumerate() {
        let r = match best {
            Some(b) if b == i => Result {
                loss: loss::WON,
                clearing,
                min_to_win: second.unwrap_or(floor).max(floor),
            },
            Some(b) => Result {
                loss: if e.price < floor {
                    loss::BELOW_FLOOR
                } else {
                    loss::LOST_TO_HIGHER_BID
                },
                clearing,
                min_to_win: entries[b].price.saturating_add(increment),
            },
            None => Result {
                loss: loss::BELOW_FLOOR,
                clearing,
                min_to_win: floor,
            },
        };
        out.push(r);
    }
    best
}

/// What the OpenRTB substitution macros stand for in one notice.
#[derive(Debug, Clone, Copy, Default)]
pub struct MacroValues<'a> {
    pub auction_id: &'a str,
    pub bid_id: &'a str,
    pub imp_id: &'a str,
    pub seat_id: &'a str,
    pub ad_id: &'a str,
    pub price: Option<Micros>,
    pub currency: &'a str,
    /// Market bid ratio: clearing ÷ bid, as a decimal.
    pub mbr: Option<(Micros, Micros)>,
    pub loss: Option<u32>,
    pub min_to_win: Option<Micros>,
}

/// Fills `${AUCTION_*}` macros (also in their percent-encoded form `%24%7B…%7D`) into `out`.
/// Values are percent-encoded where URLs need it; unknown macros are left untouched, and a known
/// macro with no value becomes empty.
pub fn substitute(template: &str, v: &MacroValues<'_>, out: &mut String) {
    out.clear();
    let mut rest = template;
    loop {
        let plain = rest.find("${");
        let encoded = rest.find("%24%7B").or_else(|| rest.find("%24%7b"));
        let (at, open, close): (usize, usize, &str) = match (plain, encoded) {
            (Some(p), Some(e)) if e < p => (e, 6, "%7D"),
            (Some(p), _) => (p, 2, "}"),
            (None, Some(e)) => (e, 6, "%7D"),
            (None, None) => break,
        };
        let name_start = at + open;
        let Some(len) = rest[name_start..].find(close).or_else(|| {
            (close == "%7D")
                .then(|| rest[name_start..].find("%7d"))
                .flatten()
        }) else {
            break;
        };
        let name = &rest[name_start..name_start + len];
        out.push_str(&rest[..at]);
        if !write_macro(name, v, out) {
            out.push_str(&rest[at..name_start + len + close.len()]);
        }
        rest = &rest[name_start + len + close.len()..];
    }
    out.push_str(rest);
}

fn write_macro(name: &str, v: &MacroValues<'_>, out: &mut String) -> bool {
    let mut tmp = Vec::new();
    let micros = |m: Option<Micros>, tmp: &mut Vec<u8>| {
        if let Some(m) = m {
            m.write_decimal(tmp);
        }
    };
    match name {
        "AUCTION_ID" => encode(v.auction_id, out),
        "AUCTION_BID_ID" => encode(v.bid_id, out),
        "AUCTION_IMP_ID" => encode(v.imp_id, out),
        "AUCTION_SEAT_ID" => encode(v.seat_id, out),
        "AUCTION_AD_ID" => encode(v.ad_id, out),
        "AUCTION_CURRENCY" => encode(v.currency, out),
        "AUCTION_PRICE" => micros(v.price, &mut tmp),
        "AUCTION_MIN_TO_WIN" => micros(v.min_to_win, &mut tmp),
        "AUCTION_LOSS" => {
            if let Some(l) = v.loss {
                out.push_str(&l.to_string());
            }
        }
        "AUCTION_MBR" => {
            if let Some((clear, bid)) = v.mbr.filter(|(_, b)| b.0 > 0) {
                // Ratio in micros, rounded down: integer arithmetic, then decimal text.
                let r = (i128::from(clear.0) * 1_000_000 / i128::from(bid.0)) as i64;
                Micros(r).write_decimal(&mut tmp);
            }
        }
        _ => return false,
    }
    out.push_str(std::str::from_utf8(&tmp).unwrap_or_default());
    true
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: i64) -> Entry {
        Entry { price: Micros(p) }
    }

    #[test]
    fn first_price_winner_pays_its_bid() {
        let mut out = Vec::new();
        let w = run(
            AuctionKind::FirstPrice,
            Micros(1_000_000),
            Micros(10_000),
            &[e(2_000_000), e(3_500_000), e(500_000)],
            &mut out,
        );
        assert_eq!(w, Some(1));
        assert_eq!(out[1].loss, loss::WON);
        assert_eq!(out[1].clearing, Micros(3_500_000));
        assert_eq!(out[1].min_to_win, Micros(2_000_000));
        assert_eq!(out[0].loss, loss::LOST_TO_HIGHER_BID);
        assert_eq!(out[0].min_to_win, Micros(3_510_000));
        assert_eq!(out[2].loss, loss::BELOW_FLOOR);
    }

    #[test]
    fn second_price_pays_next_bid_plus_increment_capped_at_own_bid() {
        let mut out = Vec::new();
        let k = AuctionKind::SecondPrice;
        let inc = Micros(10_000);
        assert_eq!(
            run(k, Micros(0), inc, &[e(2_000_000), e(3_000_000)], &mut out),
            Some(1)
        );
        assert_eq!(out[1].clearing, Micros(2_010_000));
        // Alone above the floor: pays floor + increment.
        run(k, Micros(1_000_000), inc, &[e(3_000_000)], &mut out);
        assert_eq!(out[0].clearing, Micros(1_010_000));
        // Equal bids: the earlier one wins and pays its own bid (the cap).
        assert_eq!(
            run(k, Micros(0), inc, &[e(2_000_000), e(2_000_000)], &mut out),
            Some(0)
        );
        assert_eq!(out[0].clearing, Micros(2_000_000));
        assert_eq!(out[1].loss, loss::LOST_TO_HIGHER_BID);
    }

    #[test]
    fn nobody_reaches_the_floor() {
        let mut out = Vec::new();
        let w = run(
            AuctionKind::FirstPrice,
            Micros(5_000_000),
            Micros(0),
            &[e(1), e(4_999_999)],
            &mut out,
        );
        assert_eq!(w, None);
        assert!(out.iter().all(|r| r.loss == loss::BELOW_FLOOR));
        assert!(run(AuctionKind::FirstPrice, Micros(0), Micros(0), &[], &mut out).is_none());
        assert!(out.is_empty());
    }

    #[test]
    fn fills_macros_plain_and_encoded_and_leaves_unknown_ones() {
        let v = MacroValues {
            auction_id: "req 1",
            imp_id: "2",
            price: Some(Micros(1_250_000)),
            loss: Some(102),
            min_to_win: Some(Micros(3_010_000)),
            mbr: Some((Micros(1_000_000), Micros(4_000_000))),
            currency: "USD",
            ..MacroValues::default()
        };
        let mut out = String::new();
        substitute(
            "http://h/notice/win?p=${AUCTION_PRICE}&r=${AUCTION_ID}&i=%24%7BAUCTION_IMP_ID%7D&x=${OTHER}&c=${AUCTION_CURRENCY}",
            &v,
            &mut out,
        );
        assert_eq!(
            out,
            "http://h/notice/win?p=1.25&r=req%201&i=2&x=${OTHER}&c=USD"
        );
        substitute(
            "l=${AUCTION_LOSS}&m=${AUCTION_MIN_TO_WIN}&b=${AUCTION_MBR}&s=${AUCTION_SEAT_ID}&open=${AUCTION_PRICE",
            &v,
            &mut out,
        );
        assert_eq!(out, "l=102&m=3.01&b=0.25&s=&open=${AUCTION_PRICE");
    }
}

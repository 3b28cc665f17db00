//! The exchange simulator's settlement: bidders' responses to one request in, auction per imp,
//! and the notices to call (win, billing, loss, click) out, with macros filled.
//!
//! Pure: no I/O, randomness from the caller's [`Rng`]. Owned by the simulator's thread. Must
//! never: trust a bidder's response (unknown imp ids, non-positive or absurd prices and
//! currencies other than the request's are dropped and counted).

use codec::Micros;
use codec::response::parsed::BidResponse;
use serde::Serialize;

use crate::auction::{self, AuctionKind, Entry, MacroValues};
use crate::rng::Rng;

/// Which notice a URL is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Win,
    Billing,
    Loss,
    Click,
}

/// A notice to send: `GET url` on behalf of bidder `bidder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub bidder: usize,
    pub url: String,
}

/// One imp of the request as the auction needs it.
#[derive(Debug, Clone)]
pub struct ImpSlot {
    pub id: String,
    pub floor: Micros,
}

/// Simulated competitors: on each imp, with probability `share`, `count` rivals bid uniformly
/// between the floor and `max_cpm` (they send no notices).
#[derive(Debug, Clone, Copy)]
pub struct Rivals {
    pub count: u32,
    pub share: f64,
    pub max_cpm: Micros,
}

/// How the exchange settles.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `None`: follow the request's `at` (1 first price, else second price).
    pub force: Option<AuctionKind>,
    pub increment: Micros,
    /// Share of wins whose ad renders (→ billing notice).
    pub render_share: f64,
    /// Share of billed impressions clicked (→ click notice).
    pub click_share: f64,
    pub rivals: Rivals,
}

/// Counts of one settlement (added up by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub imps: u64,
    /// Valid bids from the bidders (rivals not counted).
    pub bids: u64,
    /// Bids dropped as invalid (unknown imp, bad price, wrong currency, duplicate).
    pub invalid_bids: u64,
    /// Imps won by one of the bidders.
    pub wins: u64,
    /// Imps won by a simulated rival.
    pub rival_wins: u64,
    /// Impressions rendered and billed (to the bidders).
    pub billed: u64,
    pub clicks: u64,
    /// What the bidders pay: Σ clearing CPM ÷ 1000 over billed impressions, micros.
    pub spend_micros: i64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.imps += o.imps;
        self.bids += o.bids;
        self.invalid_bids += o.invalid_bids;
        self.wins += o.wins;
        self.rival_wins += o.rival_wins;
        self.billed += o.billed;
        self.clicks += o.clicks;
        self.spend_micros = self.spend_micros.saturating_add(o.spend_micros);
    }
}

/// The click URL of a billing URL: the same query on the route `/notice/click`.
pub fn click_url(burl: &str) -> Option<String> {
    let i = burl.find("/notice/billing")?;
    Some(format!(
        "{}/notice/click{}",
        &burl[..i],
        &burl[i + "/notice/billing".len()..]
    ))
}

/// A click tracker the bidder put in its markup: the first `http://…/notice/click?…` URL in
/// `adm` (up to a quote, `<`, `>` or whitespace), with `&amp;` turned back into `&`.
pub fn click_url_in_adm(adm: &str) -> Option<String> {
    let at = adm.find("/notice/click?")?;
    let start = adm[..at].rfind("http://")?;
    let end = adm[at..]
        .find(|c: char| c == '"' || c == '\'' || c == '<' || c == '>' || c.is_whitespace())
        .map_or(adm.len(), |e| at + e);
    Some(adm[start..end].replace("&amp;", "&"))
}

struct Cand<'a> {
    bidder: usize,
    price: Micros,
    bid_id: &'a str,
    seat: &'a str,
    ad_id: &'a str,
    nurl: Option<&'a str>,
    burl: Option<&'a str>,
    lurl: Option<&'a str>,
    adm: Option<&'a str>,
}

/// The request being auctioned, as settlement needs it.
#[derive(Debug, Clone)]
pub struct Auctioned<'a> {
    pub request_id: &'a str,
    /// The request's auction type (`at`).
    pub at: Option<u32>,
    pub currency: &'a str,
    pub imps: &'a [ImpSlot],
}

/// Settles one request. `answers[b]` is bidder `b`'s parsed response (`None`: no bid).
/// Notices are appended to `notices`.
pub fn settle(
    req: &Auctioned<'_>,
    answers: &[Option<BidResponse>],
    rules: &Rules,
    rng: &mut Rng,
    notices: &mut Vec<Notice>,
) -> Tally {
    let Auctioned {
        request_id,
        at,
        currency,
        imps,
    } = *req;
    let mut t = Tally {
        imps: imps.len() as u64,
        ..Tally::default()
    };
    let kind = rules.force.unwrap_or(if at == Some(1) {
        AuctionKind::FirstPrice
    } else {
        AuctionKind::SecondPrice
    });
    // A response in another currency is refused whole; bids on unknown imps are dropped.
    let usable: Vec<Option<&BidResponse>> = answers
        .iter()
        .map(|a| {
            a.as_ref().filter(|r| {
                let ok = r.cur.as_deref().is_none_or(|c| c == currency);
                if !ok {
                    t.invalid_bids += r.seatbid.iter().map(|s| s.bid.len() as u64).sum::<u64>();
                }
                ok
            })
        })
        .collect();
    for r in usable.iter().flatten() {
        for sb in &r.seatbid {
            t.invalid_bids += sb
                .bid
                .iter()
                .filter(|b| !imps.iter().any(|i| i.id == b.impid))
                .count() as u64;
        }
    }
    let mut results = Vec::new();
    let mut fill = String::new();
    for imp in imps {
        let mut cands: Vec<Cand<'_>> = Vec::new();
        for (b, ans) in usable.iter().enumerate() {
            let Some(r) = ans else { continue };
            for sb in &r.seatbid {
                for bid in sb.bid.iter().filter(|x| x.impid == imp.id) {
                    let price = Micros::from_f64(bid.price).filter(|p| p.0 > 0);
                    let dup = cands.iter().any(|c| c.bidder == b);
                    match price {
                        Some(price) if !dup => {
                            t.bids += 1;
                            cands.push(Cand {
                                bidder: b,
                                price,
                                bid_id: &bid.id,
                                seat: sb.seat.as_deref().unwrap_or_default(),
                                ad_id: bid.adid.as_deref().unwrap_or_default(),
                                nurl: bid.nurl.as_deref(),
                                burl: bid.burl.as_deref(),
                                lurl: bid.lurl.as_deref(),
                                adm: bid.adm.as_deref(),
                            });
                        }
                        _ => t.invalid_bids += 1,
                    }
                }
            }
        }
        let bidder_cands = cands.len();
        if rng.chance(rules.rivals.share) {
            for _ in 0..rules.rivals.count {
                let lo = imp.floor.0.max(10_000) as u64;
                let hi = (rules.rivals.max_cpm.0 as u64).max(lo);
                cands.push(Cand {
                    bidder: usize::MAX,
                    price: Micros(rng.range(lo, hi) as i64),
                    bid_id: "",
                    seat: "",
                    ad_id: "",
                    nurl: None,
                    burl: None,
                    lurl: None,
                    adm: None,
                });
            }
        }
        if bidder_cands == 0 {
            if !cands.is_empty() {
                let entries: Vec<Entry> = cands.iter().map(|c| Entry { price: c.price }).collect();
                if auction::run(kind, imp.floor, rules.increment, &entries, &mut results).is_some()
                {
                    t.rival_wins += 1;
                }
            }
            continue;
        }
        let entries: Vec<Entry> = cands.iter().map(|c| Entry { price: c.price }).collect();
        let winner = auction::run(kind, imp.floor, rules.increment, &entries, &mut results);
        for (i, c) in cands.iter().enumerate().take(bidder_cands) {
            let r = results[i];
            let mut v = MacroValues {
                auction_id: request_id,
                bid_id: c.bid_id,
                imp_id: &imp.id,
                seat_id: c.seat,
                ad_id: c.ad_id,
                currency,
                loss: Some(r.loss),
                min_to_win: Some(r.min_to_win),
                ..MacroValues::default()
            };
            if winner == Some(i) {
                t.wins += 1;
                v.price = Some(r.clearing);
                v.mbr = Some((r.clearing, c.price));
                if let Some(u) = c.nurl {
                    auction::substitute(u, &v, &mut fill);
                    notices.push(Notice {
                        kind: NoticeKind::Win,
                        bidder: c.bidder,
                        url: fill.clone(),
                    });
                }
                if rng.chance(rules.render_share) {
                    t.billed += 1;
                    t.spend_micros += r.clearing.0 / 1000;
                    if let Some(u) = c.burl {
                        auction::substitute(u, &v, &mut fill);
                        notices.push(Notice {
                            kind: NoticeKind::Billing,
                            bidder: c.bidder,
                            url: fill.clone(),
                        });
                        // The bidder's own click tracker when its markup has one, else the
                        // billing URL on the click route.
                        let tracker = c.adm.and_then(click_url_in_adm).map(|u| {
                            let mut f = String::new();
                            auction::substitute(&u, &v, &mut f);
                            f
                        });
                        if rng.chance(rules.click_share)
                            && let Some(click) = tracker.or_else(|| click_url(&fill))
                        {
                            t.clicks += 1;
                            notices.push(Notice {
                                kind: NoticeKind::Click,
                                bidder: c.bidder,
                                url: click,
                            });
                        }
                    }
                }
            } else if let Some(u) = c.lurl {
                // Losers learn the reason and the bar, not the winner's exact price.
                auction::substitute(u, &v, &mut fill);
                notices.push(Notice {
                    kind: NoticeKind::Loss,
                    bidder: c.bidder,
                    url: fill.clone(),
                });
            }
        }
        if winner.is_some_and(|w| w >= bidder_cands) {
            t.rival_wins += 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(id: &str, bids: &[(&str, f64)]) -> Option<BidResponse> {
        let bids: Vec<serde_json::Value> = bids
            .iter()
            .map(|(imp, p)| {
                serde_json::json!({"id": format!("b-{imp}"), "impid": imp, "price": p,
                "nurl": "http://d/notice/win?x=1&p=${AUCTION_PRICE}&i=${AUCTION_IMP_ID}",
                "burl": "http://d/notice/billing?x=1&p=${AUCTION_PRICE}",
                "lurl": "http://d/notice/loss?x=1&l=${AUCTION_LOSS}&m=${AUCTION_MIN_TO_WIN}"})
            })
            .collect();
        Some(
            serde_json::from_value(
                serde_json::json!({"id": id, "cur": "USD", "seatbid": [{"seat": "s", "bid": bids}]}),
            )
            .unwrap(),
        )
    }

    fn rules() -> Rules {
        Rules {
            force: None,
            increment: Micros(10_000),
            render_share: 1.0,
            click_share: 1.0,
            rivals: Rivals {
                count: 0,
                share: 0.0,
                max_cpm: Micros(0),
            },
        }
    }

    #[test]
    fn winner_gets_win_billing_and_click_loser_gets_loss() {
        let imps = [ImpSlot {
            id: "1".into(),
            floor: Micros(500_000),
        }];
        let answers = [resp("r", &[("1", 2.0)]), resp("r", &[("1", 3.0)])];
        let mut notices = Vec::new();
        let t = settle(
            &Auctioned {
                request_id: "r",
                at: Some(1),
                currency: "USD",
                imps: &imps,
            },
            &answers,
            &rules(),
            &mut Rng::new(1),
            &mut notices,
        );
        assert_eq!(
            (t.imps, t.bids, t.wins, t.billed, t.clicks),
            (1, 2, 1, 1, 1)
        );
        assert_eq!(t.spend_micros, 3_000);
        let urls: Vec<(NoticeKind, usize, &str)> = notices
            .iter()
            .map(|n| (n.kind, n.bidder, n.url.as_str()))
            .collect();
        assert_eq!(
            urls,
            vec![
                (NoticeKind::Loss, 0, "http://d/notice/loss?x=1&l=102&m=3.01"),
                (NoticeKind::Win, 1, "http://d/notice/win?x=1&p=3&i=1"),
                (NoticeKind::Billing, 1, "http://d/notice/billing?x=1&p=3"),
                (NoticeKind::Click, 1, "http://d/notice/click?x=1&p=3"),
            ]
        );
    }

    #[test]
    fn second_price_and_invalid_bids() {
        let imps = [
            ImpSlot {
                id: "1".into(),
                floor: Micros(0),
            },
            ImpSlot {
                id: "2".into(),
                floor: Micros(9_000_000),
            },
        ];
        let answers = [
            resp("r", &[("1", 2.0), ("2", 5.0), ("9", 1.0)]),
            resp("r", &[("1", 4.0), ("1", 7.0)]),
            None,
        ];
        let mut notices = Vec::new();
        let mut rl = rules();
        rl.click_share = 0.0;
        let t = settle(
            &Auctioned {
                request_id: "r",
                at: Some(2),
                currency: "USD",
                imps: &imps,
            },
            &answers,
            &rl,
            &mut Rng::new(1),
            &mut notices,
        );
        // Bid on unknown imp "9" and bidder 1's second bid on imp 1 are invalid.
        assert_eq!((t.bids, t.invalid_bids, t.wins), (3, 2, 1));
        let win = notices.iter().find(|n| n.kind == NoticeKind::Win).unwrap();
        assert_eq!(
            (win.bidder, win.url.as_str()),
            (1, "http://d/notice/win?x=1&p=2.01&i=1")
        );
        // Imp 2: below the floor, a loss with reason 100 and the floor as the bar.
        assert!(
            notices
                .iter()
                .any(|n| n.url == "http://d/notice/loss?x=1&l=100&m=9")
        );
        assert_eq!(t.spend_micros, 2_010);
    }

    #[test]
    fn rivals_can_take_the_imp() {
        let imps = [ImpSlot {
            id: "1".into(),
            floor: Micros(0),
        }];
        let answers = [resp("r", &[("1", 0.02)])];
        let mut rl = rules();
        rl.rivals = Rivals {
            count: 3,
            share: 1.0,
            max_cpm: Micros(50_000_000),
        };
        let mut notices = Vec::new();
        let t = settle(
            &Auctioned {
                request_id: "r",
                at: Some(1),
                currency: "USD",
                imps: &imps,
            },
            &answers,
            &rl,
            &mut Rng::new(5),
            &mut notices,
        );
        assert_eq!((t.wins, t.rival_wins), (0, 1));
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].kind, NoticeKind::Loss);
    }

    #[test]
    fn click_url_keeps_the_signed_query() {
        assert_eq!(
            click_url("http://h:1/notice/billing?a=1&sig=z").as_deref(),
            Some("http://h:1/notice/click?a=1&sig=z")
        );
        assert_eq!(click_url("http://h/other"), None);
        let adm =
            r#"<a href="http://h:1/notice/click?k=c&amp;s=x&amp;aid=${AUCTION_ID}"><img></a>"#;
        assert_eq!(
            click_url_in_adm(adm).as_deref(),
            Some("http://h:1/notice/click?k=c&s=x&aid=${AUCTION_ID}")
        );
        assert_eq!(click_url_in_adm("<img src=\"http://x/y\">"), None);
    }
}

//! The decision trace on demand: which campaigns a bid request was checked against, and why each
//! one did not bid (or what it bid).
//!
//! An exchange listed in `bidding.trace_exchanges` (the `{exchange}` of `/openrtb2/bid/{exchange}`,
//! or the gateway's `X-Helios-Exchange` header) gets the trace for a request that carries
//! `X-Helios-Trace: 1` or `"test": 1`: the core decides with [`shards::Shard::decide_traced`]
//! and the answer carries the trace in the bid response's `ext.helios_trace` — a 200 with an
//! empty `seatbid` when nothing bids, so a no-bid can be explained too. Everyone else gets the
//! normal answer and the normal, allocation-free path.
//!
//! Runs on the core that owns the request. Allocates (the trace and its JSON): that is allowed
//! here because tracing is opt-in, rare and never on the normal path. Must never: trace for an
//! exchange that is not allowed, or change the decision (the traced decision is the real one:
//! bids reserve budget and emit events as usual).

use codec::ValidRequest;
use codec::event::NoBidReason;
use serde_json::{Value, json};
use shards::{Decision, Drop, Privacy, Trace};

/// Whether the profile replica was used for the traced decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileUse {
    /// No profile replica configured on this node.
    NoReplica,
    /// Privacy signals forbid personal data (or the request names no user).
    NotAllowed,
    /// The replica is not fresh: bid contextually.
    Stale,
    /// Looked up; the user is not in the replica.
    Absent,
    Found,
}

impl ProfileUse {
    fn as_str(self) -> &'static str {
        match self {
            ProfileUse::NoReplica => "no_replica",
            ProfileUse::NotAllowed => "not_allowed",
            ProfileUse::Stale => "stale_replica",
            ProfileUse::Absent => "absent",
            ProfileUse::Found => "found",
        }
    }
}

/// Parses `bidding.trace_exchanges` ("a,b", "*", "").
pub fn parse_allowed(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `exchange` (path) or `header` (gateway) names an exchange allowed to ask for traces.
pub fn allowed(list: &[String], exchange: &str, header: &str) -> bool {
    if list.is_empty() {
        return false;
    }
    list.iter().any(|x| {
        x == "*" || (!exchange.is_empty() && x == exchange) || (!header.is_empty() && x == header)
    })
}

/// `CamelCase` → `snake_case` (the names of drops and restrictions in the trace).
fn snake(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn drop_name(d: Drop) -> String {
    snake(&format!("{d:?}"))
}

fn privacy_name(p: Option<Privacy>) -> String {
    match p {
        None => "not_evaluated".into(),
        Some(Privacy::Personalized) => "personalized".into(),
        Some(Privacy::Contextual(r)) => format!("contextual:{}", snake(&format!("{r:?}"))),
    }
}

/// The trace as a JSON object (the value of `ext.helios_trace`).
pub fn render(
    req: &ValidRequest<'_>,
    exchange: &str,
    trace: &Trace,
    decision: &Decision,
    campaigns_in_set: usize,
    profile: ProfileUse,
) -> Vec<u8> {
    let imp_id = |i: Option<u8>| -> Value {
        match i {
            None => Value::Null,
            Some(i) => req
                .req()
                .imp
                .get(usize::from(i))
                .and_then(|imp| imp.id.as_deref())
                .map_or(Value::Null, |s| Value::String(s.to_owned())),
        }
    };
    let considered: Vec<Value> = trace
        .entries
        .iter()
        .map(|e| match e.outcome {
            Ok(price) => json!({
                "campaign": e.campaign_id,
                "imp": imp_id(e.imp),
                "eligible_price_usd_micros": price.0,
            }),
            Err(d) => json!({
                "campaign": e.campaign_id,
                "imp": imp_id(e.imp),
                "dropped": drop_name(d),
            }),
        })
        .collect();
    let bids: Vec<Value> = decision
        .bids
        .iter()
        .map(|b| {
            json!({
                "campaign": b.campaign_id,
                "creative": b.creative_id,
                "imp": imp_id(Some(b.imp_index)),
                "price_micros": b.price.0,
                "currency": std::str::from_utf8(&b.currency.code()).unwrap_or("?"),
            })
        })
        .collect();
    let v = json!({
        "exchange": exchange,
        "test": req.is_test(),
        "privacy": privacy_name(trace.privacy),
        "profile": profile.as_str(),
        "campaigns_in_set": campaigns_in_set,
        "considered": considered,
        "bids": bids,
        "no_bid_reason": decision.no_bid.map(NoBidReason::as_str),
    });
    // Serialising a `Value` cannot fail (string keys only).
    serde_json::to_vec(&v).unwrap_or_default()
}

/// `response` (a JSON object, the encoded bid response) with `"ext":{"helios_trace":TRACE}`
/// added as its last member, into `out`.
pub fn splice(response: &[u8], trace: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let body = response.trim_ascii_end();
    let Some(inner) = body.strip_suffix(b"}") else {
        out.extend_from_slice(response);
        return;
    };
    out.extend_from_slice(inner);
    if inner.trim_ascii_end() != b"{" {
        out.push(b',');
    }
    out.extend_from_slice(b"\"ext\":{\"helios_trace\":");
    out.extend_from_slice(trace);
    out.extend_from_slice(b"}}");
}

/// A no-bid answered with its trace: `{"id":…,"seatbid":[],"ext":{"helios_trace":TRACE}}`.
pub fn no_bid_body(request_id: &str, trace: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"id\":");
    // A string serialises infallibly into a Vec.
    let _ = serde_json::to_writer(&mut *out, request_id);
    out.extend_from_slice(b",\"seatbid\":[]");
    out.extend_from_slice(b",\"ext\":{\"helios_trace\":");
    out.extend_from_slice(trace);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allowed_lists() {
        let l = parse_allowed(" adx , ssp-2 ,");
        assert_eq!(l, ["adx", "ssp-2"]);
        assert!(allowed(&l, "adx", ""));
        assert!(allowed(&l, "", "ssp-2"));
        assert!(!allowed(&l, "other", ""));
        assert!(!allowed(&l, "", ""));
        assert!(!allowed(&[], "adx", "adx"));
        assert!(allowed(&parse_allowed("*"), "", ""));
    }

    #[test]
    fn splice_adds_ext_last() {
        let mut out = Vec::new();
        splice(br#"{"id":"r","seatbid":[]}"#, br#"{"a":1}"#, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "r");
        assert_eq!(v["ext"]["helios_trace"]["a"], 1);
        splice(b"{}", b"{}", &mut out);
        assert_eq!(out, br#"{"ext":{"helios_trace":{}}}"#);
        no_bid_body("q\"1", br#"{"b":2}"#, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "q\"1");
        assert_eq!(v["ext"]["helios_trace"]["b"], 2);
    }

    #[test]
    fn names() {
        assert_eq!(drop_name(Drop::DeviceType), "device_type");
        assert_eq!(drop_name(Drop::Outbid), "outbid");
        assert_eq!(privacy_name(Some(Privacy::Personalized)), "personalized");
        assert_eq!(
            privacy_name(Some(Privacy::Contextual(
                shards::privacy::Restriction::UsPrivacy
            ))),
            "contextual:us_privacy"
        );
    }
}

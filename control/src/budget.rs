//! [`RedisBudget`]: campaign budgets and per-holder leases in Redis, changed only by one Lua
//! script so every exchange is atomic across nodes.
//!
//! The script (on the Redis server clock): forfeits every expired lease (its holder did not
//! settle it: the balance is counted as spent, never granted again — see `shards::pacing`,
//! "A holder's death"); when the caller is a new incarnation of its holder (a restarted
//! process: `LeaseOp::incarnation_ms` differs from the one recorded), forfeits the lease the
//! holder's name had instead of handing it over; takes the reported spend out of the caller's
//! lease (spend beyond it — late wins after expiry — comes out of the holder's forfeit, then
//! from the remaining budget, reported as overdraft); grants up to the wanted amount from the
//! remaining budget (at most a quarter of it per exchange, but one impression's cost:
//! `shards::pacing::grant_for`) — or, for a negative want, gives that much of the lease back,
//! or, for a final settlement (`LeaseOp::keep`), gives back all but `keep` —, renews the
//! caller's expiry, and hands back (and clears) what other nodes charged to the caller's lease
//! since its last exchange. A second script charges a bid billed on this node to the holder
//! that made it (another node or core, or this node's previous incarnation) without renewing
//! that holder: to its lease when the bid is its current incarnation's, else to its forfeit.
//! Amounts are integers (micros) below 2^53 (Lua numbers). Used from the control thread only;
//! never from a bidding core.

use redis::{Connection, Script};
use shards::pacing::{BudgetStore, LeaseGrant, LeaseOp};

use crate::keys;

/// Forfeits every expired lease (KEYS: remaining, leases, expiry, remote, forfeit, incarnation);
/// defines `now` (ms, Redis server clock), `forfeited` (micros forfeited by this call),
/// `from_forfeit` (micros charged out of forfeits) and `charge_forfeit(holder, amount)`, which
/// takes `amount` out of the holder's forfeit and the rest out of the remaining budget,
/// returning that rest (the overdraft).
const RECLAIM_LUA: &str = r#"
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local forfeited = 0
local from_forfeit = 0
local function retire(h)
  local b = tonumber(redis.call('HGET', KEYS[2], h) or '0')
  if b > 0 then
    redis.call('HINCRBY', KEYS[5], h, b)
    forfeited = forfeited + b
  end
  redis.call('HDEL', KEYS[2], h)
  redis.call('HDEL', KEYS[4], h)
  redis.call('ZREM', KEYS[3], h)
end
local function charge_forfeit(h, amount)
  if amount <= 0 then return 0 end
  local f = tonumber(redis.call('HGET', KEYS[5], h) or '0')
  local take = amount
  if take > f then take = f end
  if take < 0 then take = 0 end
  if take > 0 then
    if take == f then redis.call('HDEL', KEYS[5], h) else redis.call('HINCRBY', KEYS[5], h, -take) end
    from_forfeit = from_forfeit + take
  end
  local beyond = amount - take
  if beyond > 0 then redis.call('DECRBY', KEYS[1], beyond) end
  return beyond
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, h in ipairs(expired) do retire(h) end
"#;

const LEASE_LUA: &str = r#"
local holder = ARGV[1]
local spent = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local share = tonumber(ARGV[5])
local unit = tonumber(ARGV[6])
local inc = ARGV[7]
local keep = tonumber(ARGV[8])
if inc ~= '0' and redis.call('HGET', KEYS[6], holder) ~= inc then
  retire(holder)
  redis.call('HSET', KEYS[6], holder, inc)
end
local remote = tonumber(redis.call('HGET', KEYS[4], holder) or '0')
if remote ~= 0 then redis.call('HDEL', KEYS[4], holder) end
local bal = tonumber(redis.call('HGET', KEYS[2], holder) or '0') - spent
local overdraft = 0
if bal < 0 then
  overdraft = charge_forfeit(holder, -bal)
  bal = 0
end
local give = 0
if keep >= 0 then
  if bal > keep then
    redis.call('INCRBY', KEYS[1], bal - keep)
    bal = keep
  end
else
  local rem = tonumber(redis.call('GET', KEYS[1]) or '0')
  local cap = math.floor(rem / 1000000) * share + math.floor((rem % 1000000) * share / 1000000)
  if cap < unit then cap = unit end
  give = want
  if give > rem then give = rem end
  if give > cap then give = cap end
  if give < 0 then give = 0 end
  if give > 0 then redis.call('DECRBY', KEYS[1], give) end
  bal = bal + give
  if want < 0 then
    local back = -want
    if back > bal then back = bal end
    bal = bal - back
    redis.call('INCRBY', KEYS[1], back)
  end
end
redis.call('HSET', KEYS[2], holder, bal)
redis.call('ZADD', KEYS[3], now + ttl, holder)
return {give, bal, overdraft, remote, forfeited, from_forfeit}
"#;

/// Charges ARGV[2] micros to holder ARGV[1] for its bid made at ARGV[3] (unix ms): to its
/// lease when the bid is its current incarnation's, else (or with no lease) to its forfeit.
const CHARGE_LUA: &str = r#"
local holder = ARGV[1]
local spent = tonumber(ARGV[2])
local bid = tonumber(ARGV[3])
local inc = tonumber(redis.call('HGET', KEYS[6], holder) or '0')
local cur = redis.call('HGET', KEYS[2], holder)
local overdraft = 0
if cur and not (inc > 0 and bid < inc) then
  local bal = tonumber(cur) - spent
  if bal < 0 then
    overdraft = charge_forfeit(holder, -bal)
    bal = 0
  end
  redis.call('HSET', KEYS[2], holder, bal)
  redis.call('HINCRBY', KEYS[4], holder, spent)
else
  overdraft = charge_forfeit(holder, spent)
end
return {overdraft, forfeited, from_forfeit}
"#;

/// Releases queued for one node, at most (older ones are trimmed: their reservations expire).
pub const RELEASES_MAX: usize = 1_000_000;
/// A node's release list expires this long after the last push (the node is gone).
pub const RELEASES_TTL_S: i64 = 3_600;

/// Budget store on one Redis connection (the control thread's).
pub struct RedisBudget {
    con: Connection,
    script: Script,
    charge_script: Script,
    /// Lease time-to-live (ms): a holder that stops exchanging loses its lease after this.
    pub ttl_ms: u64,
    /// Spend reported beyond a lease and its holder's forfeit (micros), and exchanges that
    /// failed (Redis errors).
    pub overdraft: i64,
    pub errors: u64,
    /// Leases forfeited by this store's calls (expired or taken over unsettled), and spend
    /// charged out of forfeits since (micros).
    pub forfeited: i64,
    pub forfeit_charged: i64,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudget")
            .field("ttl_ms", &self.ttl_ms)
            .field("overdraft", &self.overdraft)
            .field("errors", &self.errors)
            .field("forfeited", &self.forfeited)
            .finish()
    }
}

impl RedisBudget {
    pub fn new(con: Connection, ttl_ms: u64) -> RedisBudget {
        RedisBudget {
            con,
            script: Script::new(&format!("{RECLAIM_LUA}{LEASE_LUA}")),
            charge_script: Script::new(&format!("{RECLAIM_LUA}{CHARGE_LUA}")),
            ttl_ms,
            overdraft: 0,
            errors: 0,
            forfeited: 0,
            forfeit_charged: 0,
        }
    }

    /// The exchange, with Redis errors returned (the trait's form counts them and grants 0).
    pub fn try_exchange(&mut self, holder: &str, op: &LeaseOp) -> redis::RedisResult<LeaseGrant> {
        let (give, bal, over, remote, forfeited, from_forfeit): (i64, i64, i64, i64, i64, i64) =
            self.script
                .key(keys::remaining(op.campaign_id))
                .key(keys::leases(op.campaign_id))
                .key(keys::expiry(op.campaign_id))
                .key(keys::remote(op.campaign_id))
                .key(keys::forfeit(op.campaign_id))
                .key(keys::incarnation(op.campaign_id))
                .arg(holder)
                .arg(op.spent)
                .arg(op.want)
                .arg(self.ttl_ms)
                .arg(shards::pacing::GRANT_SHARE_PPM)
                .arg(op.unit)
                .arg(op.incarnation_ms)
                .arg(op.keep.map_or(-1, |k| k.max(0)))
                .invoke(&mut self.con)?;
        self.overdraft += over;
        self.forfeited += forfeited;
        self.forfeit_charged += from_forfeit;
        Ok(LeaseGrant {
            campaign_id: op.campaign_id,
            granted: give,
            balance: bal,
            remote_spent: remote,
        })
    }

    /// Charges `spent` to `holder` for its bid made at `bid_ms` (unix ms; see
    /// [`BudgetStore::charge`]), Redis errors returned.
    pub fn try_charge(
        &mut self,
        holder: &str,
        campaign_id: u32,
        spent: i64,
        bid_ms: u64,
    ) -> redis::RedisResult<()> {
        let (over, forfeited, from_forfeit): (i64, i64, i64) = self
            .charge_script
            .key(keys::remaining(campaign_id))
            .key(keys::leases(campaign_id))
            .key(keys::expiry(campaign_id))
            .key(keys::remote(campaign_id))
            .key(keys::forfeit(campaign_id))
            .key(keys::incarnation(campaign_id))
            .arg(holder)
            .arg(spent)
            .arg(bid_ms)
            .invoke(&mut self.con)?;
        self.overdraft += over;
        self.forfeited += forfeited;
        self.forfeit_charged += from_forfeit;
        Ok(())
    }

    /// What `holder` lost without settling it and was not charged since (micros).
    pub fn forfeit(&mut self, campaign_id: u32, holder: &str) -> redis::RedisResult<i64> {
        let v: Option<i64> = redis::cmd("HGET")
            .arg(keys::forfeit(campaign_id))
            .arg(holder)
            .query(&mut self.con)?;
        Ok(v.unwrap_or(0))
    }

    /// Queues the release of a reservation for the node that holds it (see [`keys::releases`]).
    pub fn try_release(
        &mut self,
        node: &str,
        core: u16,
        campaign_id: u32,
        bid_ts_unix_ns: u64,
        reserved: i64,
    ) -> redis::RedisResult<()> {
        let key = keys::releases(node);
        redis::pipe()
            .rpush(
                &key,
                format!("{core} {campaign_id} {bid_ts_unix_ns} {reserved}"),
            )
            .ignore()
            .ltrim(&key, -(RELEASES_MAX as isize), -1)
            .ignore()
            .expire(&key, RELEASES_TTL_S)
            .ignore()
            .exec(&mut self.con)
    }

    /// Takes up to `max` queued releases for `node`: (core, campaign, bid time, reserved).
    /// Malformed entries are skipped.
    pub fn try_take_releases(
        &mut self,
        node: &str,
        max: usize,
    ) -> redis::RedisResult<Vec<(u16, u32, u64, i64)>> {
        let v: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(keys::releases(node))
            .arg(max)
            .query(&mut self.con)?;
        Ok(v.unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let mut it = e.split(' ');
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                ))
            })
            .collect())
    }

    pub fn try_init(&mut self, campaign_id: u32, total: i64) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(keys::remaining(campaign_id))
            .arg(total)
            .arg("NX")
            .exec(&mut self.con)
    }

    pub fn remaining(&mut self, campaign_id: u32) -> redis::RedisResult<i64> {
        let v: Option<i64> = redis::cmd("GET")
            .arg(keys::remaining(campaign_id))
            .query(&mut self.con)?;
        Ok(v.unwrap_or(0))
    }
}

impl BudgetStore for RedisBudget {
    fn init(&mut self, campaign_id: u32, total: i64) {
        if let Err(e) = self.try_init(campaign_id, total) {
            self.errors += 1;
            tracing::warn!(campaign_id, error = %e, "budget init failed");
        }
    }

    /// On a Redis error the op is answered with no grant and an unknown balance: the holder
    /// keeps its local lease (it can only spend what it already holds) and its spend is lost
    /// from the report, so the caller should retry the report; see [`RedisBudget::try_exchange`].
    fn exchange(&mut self, holder: &str, op: &LeaseOp, _now_ms: u64) -> LeaseGrant {
        match self.try_exchange(holder, op) {
            Ok(g) => g,
            Err(e) => {
                self.errors += 1;
                tracing::warn!(campaign_id = op.campaign_id, error = %e, "lease exchange failed");
                LeaseGrant {
                    campaign_id: op.campaign_id,
                    granted: 0,
                    balance: -1,
                    remote_spent: 0,
                }
            }
        }
    }

    fn charge(&mut self, holder: &str, campaign_id: u32, spent: i64, bid_ms: u64, _now_ms: u64) {
        if let Err(e) = self.try_charge(holder, campaign_id, spent, bid_ms) {
            self.errors += 1;
            tracing::warn!(campaign_id, error = %e, "budget charge failed");
        }
    }
}

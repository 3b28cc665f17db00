//! [`RedisBudget`]: campaign budgets and per-holder leases in Redis, changed only by one Lua
//! script so every exchange is atomic across nodes.
//!
//! The script (on the Redis server clock): returns every expired lease's balance to the
//! campaign's remaining budget (a dead node's lease comes back after its TTL), takes the
//! reported spend out of the caller's lease (spend beyond it — late wins after expiry — is taken
//! from the remaining budget and reported as overdraft), grants up to the wanted amount from the
//! remaining budget, and renews the caller's expiry. Amounts are integers (micros) below 2^53
//! (Lua numbers). Used from the control thread only; never from a bidding core.

use redis::{Connection, Script};
use shards::pacing::{BudgetStore, LeaseGrant, LeaseOp};

use crate::keys;

const LEASE_LUA: &str = r#"
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local holder = ARGV[1]
local spent = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, h in ipairs(expired) do
  local b = tonumber(redis.call('HGET', KEYS[2], h) or '0')
  if b > 0 then redis.call('INCRBY', KEYS[1], b) end
  redis.call('HDEL', KEYS[2], h)
  redis.call('ZREM', KEYS[3], h)
end
local bal = tonumber(redis.call('HGET', KEYS[2], holder) or '0') - spent
local overdraft = 0
if bal < 0 then
  overdraft = -bal
  redis.call('DECRBY', KEYS[1], overdraft)
  bal = 0
end
local rem = tonumber(redis.call('GET', KEYS[1]) or '0')
local give = want
if give > rem then give = rem end
if give < 0 then give = 0 end
if give > 0 then redis.call('DECRBY', KEYS[1], give) end
bal = bal + give
redis.call('HSET', KEYS[2], holder, bal)
redis.call('ZADD', KEYS[3], now + ttl, holder)
return {give, bal, overdraft}
"#;

/// Budget store on one Redis connection (the control thread's).
pub struct RedisBudget {
    con: Connection,
    script: Script,
    /// Lease time-to-live (ms): a holder that stops exchanging loses its lease after this.
    pub ttl_ms: u64,
    /// Spend reported beyond a lease (micros), and exchanges that failed (Redis errors).
    pub overdraft: i64,
    pub errors: u64,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudget")
            .field("ttl_ms", &self.ttl_ms)
            .field("overdraft", &self.overdraft)
            .field("errors", &self.errors)
            .finish()
    }
}

impl RedisBudget {
    pub fn new(con: Connection, ttl_ms: u64) -> RedisBudget {
        RedisBudget {
            con,
            script: Script::new(LEASE_LUA),
            ttl_ms,
            overdraft: 0,
            errors: 0,
        }
    }

    /// The exchange, with Redis errors returned (the trait's form counts them and grants 0).
    pub fn try_exchange(&mut self, holder: &str, op: &LeaseOp) -> redis::RedisResult<LeaseGrant> {
        let (give, bal, over): (i64, i64, i64) = self
            .script
            .key(keys::remaining(op.campaign_id))
            .key(keys::leases(op.campaign_id))
            .key(keys::expiry(op.campaign_id))
            .arg(holder)
            .arg(op.spent)
            .arg(op.want)
            .arg(self.ttl_ms)
            .invoke(&mut self.con)?;
        self.overdraft += over;
        Ok(LeaseGrant {
            campaign_id: op.campaign_id,
            granted: give,
            balance: bal,
        })
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
                }
            }
        }
    }
}

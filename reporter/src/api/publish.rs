//! Publishing the campaign set to the appliances: the keys the `control` crate's thread reads
//! (`helios:campaigns` + one entry on `helios:campaigns:changes`) and each campaign's budget
//! (`helios:budget:{id}:remaining`, the pacing controller's store).
//!
//! One Lua script does it atomically and only moves forward: a set whose version is not above
//! `helios:campaigns:version` is ignored (a late or repeated publish never replaces a newer set).
//! Budgets: the last total the control plane wrote is kept in `helios:budget:{id}:total`; a new
//! total moves `remaining` by the difference (a raise adds, a cut takes back), a first total
//! creates `remaining` if absent. So a publish repeated after a failure never counts twice.
//!
//! Owns one blocking Redis connection behind a mutex, used from `spawn_blocking` only (never on
//! a runtime worker). Bounded: 2 s connect/read/write timeouts; on error the connection is
//! dropped and the next publish reconnects. The keys touch several cluster slots: a single Redis
//! (or a cluster with the campaign keys on one node) is assumed, as by `control`.

use std::sync::Mutex;
use std::time::Duration;

use redis::Script;

/// Stream entries kept (approximate `MAXLEN`).
pub const CHANGES_MAXLEN: u64 = 1_000;
const TIMEOUT: Duration = Duration::from_secs(2);

/// Key of the version last published (read by [`Publisher::published_version`]).
pub const SET_VERSION_KEY: &str = "helios:campaigns:version";

/// Last budget total written by the control plane for a campaign.
pub fn total_key(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:total")
}

const PUBLISH_LUA: &str = r#"
local v = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if v <= cur then return cur end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
local n = (#KEYS - 3) / 2
for i = 0, n - 1 do
  local rk = KEYS[4 + 2 * i]
  local tk = KEYS[5 + 2 * i]
  local total = tonumber(ARGV[4 + i])
  local old = redis.call('GET', tk)
  if old then
    local d = total - tonumber(old)
    if d ~= 0 then redis.call('INCRBY', rk, d) end
  else
    redis.call('SET', rk, total, 'NX')
  end
  redis.call('SET', tk, total)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'version', ARGV[1])
return v
"#;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the publisher's lock was poisoned")]
    Poisoned,
}

pub struct Publisher {
    client: redis::Client,
    con: Mutex<Option<redis::Connection>>,
    script: Script,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    /// Fails only on a malformed URL (or CA PEM); the connection is opened on first use.
    /// `ca_pem` verifies a `rediss://` server (`None`: the system's trust store).
    pub fn new(redis_url: &str, ca_pem: Option<&[u8]>) -> Result<Publisher, PublishError> {
        Ok(Publisher {
            client: control::redis_client(redis_url, ca_pem)?,
            con: Mutex::new(None),
            script: Script::new(PUBLISH_LUA),
        })
    }

    fn with_con<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, PublishError> {
        let mut g = self.con.lock().map_err(|_| PublishError::Poisoned)?;
        if g.is_none() {
            let c = self.client.get_connection_with_timeout(TIMEOUT)?;
            c.set_read_timeout(Some(TIMEOUT))?;
            c.set_write_timeout(Some(TIMEOUT))?;
            *g = Some(c);
        }
        let Some(con) = g.as_mut() else {
            return Err(PublishError::Poisoned);
        };
        match f(con) {
            Ok(v) => Ok(v),
            Err(e) => {
                *g = None;
                Err(e.into())
            }
        }
    }

    /// Publishes set `version` (its JSON) and the budgets `(campaign id, total micros)`.
    /// Blocking; returns the version Redis holds afterwards (≥ `version` unless refused).
    pub fn publish(
        &self,
        version: u64,
        set_json: &str,
        budgets: &[(u32, i64)],
    ) -> Result<u64, PublishError> {
        self.with_con(|con| {
            let mut inv = self.script.prepare_invoke();
            inv.key(control::keys::CAMPAIGNS)
                .key(SET_VERSION_KEY)
                .key(control::keys::CAMPAIGN_CHANGES);
            for (id, _) in budgets {
                inv.key(control::keys::remaining(*id)).key(total_key(*id));
            }
            inv.arg(version).arg(set_json).arg(CHANGES_MAXLEN);
            for (_, total) in budgets {
                inv.arg(*total);
            }
            inv.invoke(con)
        })
    }

    /// The version Redis holds (0 when none was published).
    pub fn published_version(&self) -> Result<u64, PublishError> {
        self.with_con(|con| {
            let v: Option<u64> = redis::cmd("GET").arg(SET_VERSION_KEY).query(con)?;
            Ok(v.unwrap_or(0))
        })
    }
}

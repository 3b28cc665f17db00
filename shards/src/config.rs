//! [`ShardConfig`]: who we are (seat, vendor id), the currency rate table, pacing parameters.
//! Built at start-up; each shard keeps its own copy. Must never change during a decision.

use codec::{Currency, Micros};

use crate::pacing::PacingConfig;
use crate::privacy::PrivacyConfig;

/// Exchange rates: micros of USD per one unit of a currency (EUR → 1_080_000 = 1.08 USD).
/// Campaign money is USD; floors and bids in other currencies are converted with this table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTable {
    rates: Vec<(Currency, i64)>,
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable {
            rates: vec![(Currency::USD, 1_000_000)],
        }
    }
}

impl RateTable {
    /// `rates`: (currency, micros of USD per unit). USD is always 1.
    pub fn new(rates: &[(Currency, i64)]) -> RateTable {
        let mut t = RateTable::default();
        for (c, r) in rates {
            if *c != Currency::USD && *r > 0 {
                t.rates.push((*c, *r));
            }
        }
        t
    }
    pub fn rate(&self, c: Currency) -> Option<i64> {
        self.rates.iter().find(|(k, _)| *k == c).map(|(_, r)| *r)
    }
    /// An amount in `c` as USD, rounded up (floors: never bid under a converted floor).
    pub fn to_usd_ceil(&self, m: Micros, c: Currency) -> Option<Micros> {
        let r = i128::from(self.rate(c)?);
        let v = (i128::from(m.0) * r + 999_999) / 1_000_000;
        i64::try_from(v).ok().map(Micros)
    }
    /// A USD amount in `c`, rounded down (bids: never above what the strategy allows).
    pub fn from_usd_floor(&self, m: Micros, c: Currency) -> Option<Micros> {
        let r = i128::from(self.rate(c)?);
        i64::try_from(i128::from(m.0) * 1_000_000 / r)
            .ok()
            .map(Micros)
    }
}

/// Everything a shard needs besides the campaign set.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Our seat id at the exchanges (checked against `wseat` and deals' `wseat`).
    pub seat: String,
    pub privacy: PrivacyConfig,
    pub rates: RateTable,
    pub pacing: PacingConfig,
    /// Buckets of the local unreplicated-wins table (×8 entries, 16 bytes each).
    pub local_win_buckets: usize,
    /// When false, budgets and pacing are not enforced (tests and demos without a budget store).
    pub enforce_budget: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            seat: "helios".into(),
            privacy: PrivacyConfig::default(),
            rates: RateTable::default(),
            pacing: PacingConfig::default(),
            local_win_buckets: 4096,
            enforce_budget: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_integer_rounding_in_the_safe_direction() {
        let t = RateTable::new(&[(Currency::EUR, 1_080_000)]);
        assert_eq!(
            t.to_usd_ceil(Micros(1_000_000), Currency::EUR),
            Some(Micros(1_080_000))
        );
        assert_eq!(t.to_usd_ceil(Micros(1), Currency::EUR), Some(Micros(2)));
        assert_eq!(
            t.from_usd_floor(Micros(1_080_000), Currency::EUR),
            Some(Micros(1_000_000))
        );
        assert_eq!(t.from_usd_floor(Micros(1), Currency::EUR), Some(Micros(0)));
        let gbp = Currency::parse("GBP").unwrap();
        assert_eq!(t.to_usd_ceil(Micros(1), gbp), None);
    }
}

//! The campaign model as loaded (JSON) and its compiled, immutable form.
//!
//! The model is documented with a full example in `docs/CAMPAIGNS.md`. A [`CampaignSet`] is
//! checked as a whole by [`CompiledSet::compile`]: a bad set is refused and the old one stays.

use std::sync::Arc;

use codec::Micros;
use serde::Deserialize;

/// Creative format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Format {
    Banner { w: u32, h: u32 },
    Video,
    Native,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creative {
    pub id: u32,
    pub format: Format,
    #[serde(default)]
    pub adomain: Vec<String>,
    /// IAB content categories of the ad.
    #[serde(default)]
    pub cat: Vec<String>,
    /// Creative attributes (AdCOM list).
    #[serde(default)]
    pub attr: Vec<u16>,
    pub adm: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Paused,
    Archived,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: u32,
    pub advertiser_id: u32,
    pub status: Status,
    /// Fixed bid, CPM in micros of USD.
    pub bid_cpm_micros: i64,
    /// Total budget in micros of USD.
    pub total_budget_micros: i64,
    #[serde(default)]
    pub daily_budget_micros: Option<i64>,
    /// ISO-3166-1 alpha-3 countries; empty = everywhere.
    #[serde(default)]
    pub countries: Vec<String>,
    pub creatives: Vec<Creative>,
}

/// The campaigns file: `{"version": N, "campaigns": [...]}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSet {
    pub version: u64,
    pub campaigns: Vec<Campaign>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("campaigns: {0}")]
    Json(#[from] serde_json::Error),
    #[error("campaign {campaign}: {field}: {problem}")]
    Invalid {
        campaign: u32,
        field: &'static str,
        problem: String,
    },
}

/// A checked campaign set, immutable once built; cores hold it by `Arc` and swap it between
/// requests.
#[derive(Debug)]
pub struct CompiledSet {
    pub version: u64,
    pub campaigns: Vec<Campaign>,
}

impl CompiledSet {
    pub fn parse(json: &[u8]) -> Result<Arc<CompiledSet>, LoadError> {
        let set: CampaignSet = serde_json::from_slice(json)?;
        Self::compile(set)
    }

    pub fn compile(set: CampaignSet) -> Result<Arc<CompiledSet>, LoadError> {
        let mut seen = std::collections::HashSet::new();
        for c in &set.campaigns {
            let bad = |field, problem: &str| LoadError::Invalid {
                campaign: c.id,
                field,
                problem: problem.to_owned(),
            };
            if !seen.insert(c.id) {
                return Err(bad("id", "duplicate campaign id"));
            }
            if c.bid_cpm_micros <= 0 || c.bid_cpm_micros > codec::money::MAX_CPM_MICROS {
                return Err(bad("bid_cpm_micros", "must be > 0 and <= 10^12"));
            }
            if c.total_budget_micros < 0 {
                return Err(bad("total_budget_micros", "must be >= 0"));
            }
            if c.creatives.is_empty() {
                return Err(bad("creatives", "a campaign needs at least one creative"));
            }
        }
        Ok(Arc::new(CompiledSet {
            version: set.version,
            campaigns: set.campaigns,
        }))
    }

    pub fn empty() -> Arc<CompiledSet> {
        Arc::new(CompiledSet {
            version: 0,
            campaigns: Vec::new(),
        })
    }

    pub fn bid_price(&self, campaign: usize) -> Micros {
        Micros(self.campaigns[campaign].bid_cpm_micros)
    }
}
